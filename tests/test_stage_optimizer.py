"""Staged baselines get a fair optimizer: each stage its own learning-rate schedule, and an
optional reset of the optimizer's moments at a stage boundary."""

from __future__ import annotations

import pytest
import torch
from glue_utils import mixed_samples

from megatron_uniapl.algorithm.loss import UniAPLLoss, rank_batches
from megatron_uniapl.config import load_config
from megatron_uniapl.config.lr_plan import StageLR, stage_index, stage_lr_plan
from megatron_uniapl.config.objective import Stage
from megatron_uniapl.config.variants import objective_for_variant
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import SampleKind
from megatron_uniapl.model.distributed import OptimizerSettings, build_optimizer, train_step, wrap_ddp
from megatron_uniapl.model.stage_schedule import StagedLRSchedule, reset_optimizer_state, torch_optimizers

STAGED = ["objective.variant=sft->grpo", "objective.first_stage_steps=4", "train.steps=10", "discriminator.kind=none"]


def test_one_schedule_unless_a_stage_sets_its_learning_rate():
    stages = [Stage("sft", steps=4), Stage("grpo")]
    assert stage_lr_plan(stages, 1e-3, 1e-4, 2, 10) is None
    stages[0].lr = 1e-2
    assert stage_lr_plan(stages, 1e-3, 1e-4, 2, 10) == [StageLR(0, 4, 1e-2, 1e-4, 2), StageLR(4, 6, 1e-3, 1e-4, 2)]
    stages[1].min_lr, stages[1].warmup_steps = 0.0, 0
    plan = stage_lr_plan(stages, 1e-3, 1e-4, 2, 10)
    assert plan[1] == StageLR(4, 6, 1e-3, 0.0, 0)
    assert [stage_index(plan, s) for s in (0, 3, 4, 9, 12)] == [0, 0, 1, 1, 1]
    # A floor above a stage's own peak is lowered to it; a stage past train.steps has no schedule.
    assert stage_lr_plan([Stage("a", steps=3, lr=1e-5), Stage("b")], 1e-3, 1e-4, 0, 3) == [StageLR(0, 3, 1e-5, 1e-5, 0)]


def test_the_staged_presets_take_a_first_stage_learning_rate_and_a_reset():
    config = load_config("recipes/tiny_cpu.yaml", [*STAGED, "objective.first_stage_lr=0.01", "objective.reset_optimizer=true"])
    sft, grpo = config.objective_config().stages
    assert (sft.lr, sft.reset_optimizer, grpo.lr, grpo.reset_optimizer) == (0.01, False, None, True)
    o = config.optimizer
    assert config.lr_plan() == [StageLR(0, 4, 0.01, o.min_lr, o.warmup_steps), StageLR(4, 6, o.lr, o.min_lr, o.warmup_steps)]
    assert load_config("recipes/tiny_cpu.yaml", STAGED).lr_plan() is None
    assert objective_for_variant("sft->grpo", first_stage_lr=1e-5).stages[0].lr == 1e-5


@pytest.mark.parametrize(("overrides", "message"), [
    (["objective.first_stage_lr=0"], r"objective\.stages\[0\]\.lr must be > 0"),
    (["objective.variant=custom", "objective.stages=[{name: a, mu: {value: 1.0}, rollout_prompts: none, steps: 3, "
      "lr: 0.01, min_lr: 0.02}, {name: b, mu: {value: 1.0}, rollout_prompts: none}]"],
     r"objective\.stages\[0\]\.min_lr must be in \[0, lr\]"),
    (["objective.variant=custom", "objective.stages=[{name: a, mu: {value: 1.0}, rollout_prompts: none, steps: 3, "
      "lr: 0.01}, {name: b, mu: {value: 1.0}, rollout_prompts: none, min_lr: 0.5}]"],
     r"objective\.stages\[1\]\.min_lr \(0\.5\) exceeds the stage's learning rate \(0\.003"),
])
def test_bad_stage_learning_rates_are_refused(overrides, message):
    from megatron_uniapl.config.yaml_io import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("recipes/tiny_cpu.yaml", [*STAGED, *overrides])


@pytest.fixture
def setup(tiny_tied, megatron_world):
    from parity_utils import megatron_from_hf

    def make(optimizer="adam", lr=0.01):
        _, model = megatron_from_hf(tiny_tied)
        settings = OptimizerSettings(optimizer=optimizer, lr=lr, clip_grad=0.0)
        chunks = wrap_ddp([model], settings)
        optimizer_, scheduler = build_optimizer(chunks, settings, total_steps=10)
        return model, chunks, optimizer_, scheduler

    demos = [s for s in mixed_samples(seed=3) if s.kind == SampleKind.DEMO]
    packed = pack_samples(demos, 64)
    objective = objective_for_variant("sft")
    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, packed.term_counts())

    def step(chunks, optimizer, scheduler=None):
        result = train_step(chunks, optimizer, rank_batches(packed, 0), loss_fn, scheduler)
        assert not result.skipped
        return result

    return make, step


def test_each_stage_warms_up_and_decays_on_its_own(setup):
    make, step = setup
    _, chunks, optimizer, _ = make(optimizer="sgd", lr=0.01)
    plan = [StageLR(0, 3, 0.1, 0.0, 1), StageLR(3, 4, 0.02, 0.01, 2)]
    schedule = StagedLRSchedule(optimizer, plan, "linear", 0.0, base_lr=0.01)
    lrs, began = [], []
    for global_step in range(7):
        began.append(schedule.enter(global_step))
        lrs.append(step(chunks, optimizer, schedule).learning_rate)
    # Stage 0 (steps 0-2): warm-up 0 -> 0.1 in 1 step, linear decay towards 0 at its 3rd step;
    # stage 1 (steps 3-6) restarts: warm-up 0 -> 0.02 in 2 steps, then linear decay to 0.01.
    assert lrs == pytest.approx([0.0, 0.1, 0.05, 0.0, 0.01, 0.02, 0.015])
    assert began == [False, False, False, True, False, False, False]
    state = schedule.state_dict()
    resumed = StagedLRSchedule(optimizer, plan, "linear", 0.0, base_lr=0.01)
    resumed.load_state_dict(state)
    assert (resumed.index, resumed.num_steps) == (1, 4 - 0)
    assert resumed.inner.get_lr(optimizer.param_groups[0]) == pytest.approx(0.01)


def test_a_reset_optimizer_steps_like_a_fresh_one(setup):
    """Independent reference: a new optimizer over the same weights takes the same step."""
    make, step = setup
    model, chunks, optimizer, _ = make()
    for _ in range(2):
        step(chunks, optimizer)
    moments = [v for inner in torch_optimizers(optimizer) for st in inner.state.values() for v in st.values()]
    assert moments and any(float(v.abs().sum()) > 0 for v in moments)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert reset_optimizer_state(optimizer) == len(moments)
    assert all(float(v.abs().sum()) == 0 for v in moments)
    step(chunks, optimizer)

    fresh_model, fresh_chunks, fresh_optimizer, _ = make()
    with torch.no_grad():
        for n, p in fresh_model.named_parameters():
            p.copy_(weights[n])
    for inner in torch_optimizers(fresh_optimizer):  # fp32 main params, where the optimizer has them
        for group in inner.param_groups:
            assert all(not inner.state.get(p) for p in group["params"])
    step(fresh_chunks, fresh_optimizer)
    after = dict(model.named_parameters())
    for n, p in fresh_model.named_parameters():
        assert torch.equal(p, after[n]), n
    # Without the reset the same step differs: the test can tell a reset from none.
    _, chunks2, optimizer2, _ = make()
    for _ in range(3):
        step(chunks2, optimizer2)
    assert any(not torch.equal(p, after[n]) for n, p in chunks2[0].module.named_parameters())


def test_reference_refreshes_are_found_by_step_and_need_a_kl_term():
    from megatron_uniapl.config.yaml_io import ConfigError

    config = load_config("recipes/tiny_cpu.yaml", [*STAGED, "objective.refresh_reference=true", "objective.beta=0.1"])
    objective = config.objective_config()
    assert objective.stages[1].refresh_reference and not objective.stages[0].refresh_reference
    # The refresh happens at step 4 (the GRPO stage's first); a resume at 4 refreshes again itself.
    assert [objective.refreshes_before(s) for s in (0, 4, 5, 9)] == [[], [], [4], [4]]
    with pytest.raises(ConfigError, match=r"refresh_reference needs beta > 0: without a KL term there is no reference"):
        load_config("recipes/tiny_cpu.yaml", [*STAGED, "objective.refresh_reference=true"])
