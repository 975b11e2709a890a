"""Every paper variant reduces to the expected terms; bad configurations fail with clear messages."""

import pytest
import torch

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.config.objective import PolicyGradientConfig, Stage
from megatron_uniapl.config.schedule import MuSchedule
from megatron_uniapl.config.variants import VARIANTS, objective_for_variant
from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.uniapl import uniapl_loss

# variant -> (term weights at step 0, rollout prompts, needs engine, needs references)
EXPECTED = {
    "sft": ({"sft": 1.0, "pg_task": 0.0, "pg_adv": 0.0, "kl": 0.0}, "none", False, False),
    "a-sft": ({"sft": 1.0, "pg_task": 0.0, "pg_adv": 0.1, "kl": 0.0}, "demo", True, True),
    "grpo": ({"sft": 0.0, "pg_task": 1.0, "pg_adv": 0.0, "kl": 0.0}, "rl", True, False),
    "a-grpo": ({"sft": 0.0, "pg_task": 1.0, "pg_adv": 0.1, "kl": 0.0}, "rl", True, True),
    "chord": ({"sft": 0.9, "pg_task": 0.1, "pg_adv": 0.0, "kl": 0.0}, "rl", True, False),
    "a-chord": ({"sft": 0.9, "pg_task": 0.1, "pg_adv": 0.1, "kl": 0.0}, "rl", True, True),
    "uniapl": ({"sft": 0.5, "pg_task": 0.5, "pg_adv": 0.1, "kl": 0.0}, "rl", True, True),
    "sft->grpo": ({"sft": 1.0, "pg_task": 0.0, "pg_adv": 0.0, "kl": 0.0}, "none", True, False),
    "sft->a-grpo": ({"sft": 1.0, "pg_task": 0.0, "pg_adv": 0.0, "kl": 0.0}, "none", True, True),
    "a-sft->a-grpo": ({"sft": 1.0, "pg_task": 0.0, "pg_adv": 0.1, "kl": 0.0}, "demo", True, True),
    "reward-shaping": ({"sft": 0.5, "pg_task": 0.5, "pg_adv": 0.0, "kl": 0.0}, "rl", True, True),
}


def test_every_variant_is_covered():
    assert set(EXPECTED) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variant_weights_and_requirements(name):
    weights, prompts, needs_engine, needs_refs = EXPECTED[name]
    cfg = objective_for_variant(name, first_stage_steps=10)
    w = cfg.weights_at(0)
    assert w.term_weights() == pytest.approx(weights)
    assert cfg.stage_at(0)[0].rollout_prompts == prompts
    cfg.check_requirements(has_rollout_engine=True, has_references=True)
    if needs_engine:
        with pytest.raises(ValueError, match="no rollout engine is configured"):
            cfg.check_requirements(has_rollout_engine=False, has_references=True)
    else:
        cfg.check_requirements(has_rollout_engine=False, has_references=needs_refs)
    if needs_refs:
        with pytest.raises(ValueError, match="no expert reference responses"):
            cfg.check_requirements(has_rollout_engine=True, has_references=False)
    else:
        cfg.check_requirements(has_rollout_engine=True, has_references=False)


def test_demonstrations_required_where_used():
    objective_for_variant("grpo").check_requirements(True, False, has_demonstrations=False)
    for name in ("sft", "a-sft", "uniapl", "chord", "sft->grpo"):
        with pytest.raises(ValueError, match="no demonstration data is configured"):
            objective_for_variant(name).check_requirements(True, True, has_demonstrations=False)


def test_staged_variants_switch_stage_after_their_steps():
    cfg = objective_for_variant("a-sft->a-grpo", first_stage_steps=10, lambda_adv=0.2)
    assert cfg.weights_at(9).stage == "a-sft" and cfg.weights_at(9).mu == 1.0
    w = cfg.weights_at(10)
    assert w.stage == "a-grpo" and w.mu == 0.0 and w.lambda_adv == 0.2
    assert cfg.stage_at(12) == (cfg.stages[1], 2)
    chord = objective_for_variant(
        "chord", chord=MuSchedule(kind="chord", peak=0.8, end=0.0, decay_steps=10, decay="linear")
    )
    assert [chord.weights_at(t).mu for t in (0, 5, 10)] == pytest.approx([0.8, 0.4, 0.0])


def _batch():
    # Two demo tokens and three rollout tokens in one [1, 5] row.
    return dict(
        sft_mask=torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]]),
        rollout_mask=torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]]),
        advantages={
            "task": torch.tensor([[0.0, 0.0, 1.0, -1.0, 0.5]]),
            "adv": torch.tensor([[0.0, 0.0, -2.0, 1.0, 1.0]]),
        },
    )


def _grad(name, counts=None, **inputs):
    cfg = objective_for_variant(name)
    lp = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -0.7]], requires_grad=True)
    loss, metrics = uniapl_loss(
        lp,
        weights=cfg.weights_at(0),
        pg=cfg.pg,
        global_counts=counts or {"sft": 2, "pg_task": 3, "pg_adv": 3, "kl": 3},
        **inputs,
    )
    loss.backward()
    return lp.grad[0].tolist(), metrics


def test_variants_reduce_to_their_terms():
    # On-policy (rho = 1): d/dlp of -A*rho over N tokens is -A/N; SFT: -1/N per demo token.
    g, m = _grad("grpo", **_batch())
    assert g == pytest.approx([0.0, 0.0, -1 / 3, 1 / 3, -0.5 / 3])  # zero SFT gradient
    assert set(m) >= {"loss/pg_task"} and "loss/sft" not in m
    g, _ = _grad("sft", sft_mask=_batch()["sft_mask"])  # no rollout inputs needed at all
    assert g == pytest.approx([-0.5, -0.5, 0.0, 0.0, 0.0])
    g, _ = _grad("a-grpo", **_batch())
    assert g == pytest.approx([0.0, 0.0, -1 / 3 + 0.2 / 3, 1 / 3 - 0.1 / 3, -0.5 / 3 - 0.1 / 3])
    g, m = _grad("uniapl", entropy=torch.tensor([[1.0, 3.0, 0.5, 0.5, 2.0]]), **_batch())
    # Metrics are token means over each term's global count: SFT NLL (1 + 2) / 2, entropy (1 + 3) / 2.
    assert m["loss/sft"].item() == pytest.approx(1.5) and m["sft/entropy"].item() == pytest.approx(2.0)
    assert m["pg_task/entropy"].item() == pytest.approx(1.0) and m["pg_adv/advantage"].item() == 0.0
    assert g == pytest.approx(
        [-0.25, -0.25, 0.5 * -1 / 3 + 0.2 / 3, 0.5 / 3 - 0.1 / 3, 0.5 * -0.5 / 3 - 0.1 / 3]
    )
    with pytest.raises(ValueError, match=r"advantages\['adv'\] was not given"):
        _grad(
            "a-grpo",
            sft_mask=_batch()["sft_mask"],
            rollout_mask=_batch()["rollout_mask"],
            advantages={"task": _batch()["advantages"]["task"]},
        )


def _rollouts(with_reward=True):
    out = []
    for i, (r, d) in enumerate([(1.0, 0.5), (0.0, -0.5), (1.0, 2.0), (1.0, 0.0)]):
        out.append(
            Sample(
                [1],
                [2],
                SampleKind.ROLLOUT,
                group_id=i // 2,
                rewards={"task": r} if with_reward else {},
                disc_score=d,
            )
        )
    return out + [Sample([1], [2], SampleKind.DEMO)]


def test_advantage_assignment_per_variant():
    pg = PolicyGradientConfig(adv_eps=0.0)
    # A-SFT: rollouts of demo prompts carry no task reward; only the adversarial signal is used.
    samples = _rollouts(with_reward=False)
    assign_advantages(samples, objective_for_variant("a-sft").weights_at(0), pg)
    assert [s.advantages for s in samples] == [{"adv": 1.0}, {"adv": -1.0}, {"adv": 1.0}, {"adv": -1.0}, {}]
    # GRPO: task only; group 1 has equal rewards -> 0 (eps keeps it finite).
    samples = _rollouts()
    assign_advantages(samples, objective_for_variant("grpo").weights_at(0), PolicyGradientConfig())
    assert [s.advantages["task"] for s in samples[:4]] == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-5)
    # Reward shaping, lambda_shape 1: group 1 signals 3.0 vs 1.0 -> +-1; no "adv" advantage.
    samples = _rollouts()
    assign_advantages(samples, objective_for_variant("reward-shaping", lambda_shape=1.0).weights_at(0), pg)
    assert [s.advantages for s in samples[:4]] == [
        {"task": 1.0},
        {"task": -1.0},
        {"task": 1.0},
        {"task": -1.0},
    ]
    # The same with per_term shaping, lambda_shape 0.5: group 0 has rewards (1, 0) and scores
    # (0.5, -0.5): 1 + 0.5 * 1 = 1.5; group 1 has equal rewards: 0 + 0.5 * (+-1).
    samples = _rollouts()
    weights = objective_for_variant("reward-shaping", lambda_shape=0.5, shape_norm="per_term").weights_at(0)
    assert weights.shape_norm == "per_term"
    assign_advantages(samples, weights, pg)
    assert [s.advantages for s in samples[:4]] == [{"task": 1.5}, {"task": -1.5}, {"task": 0.5}, {"task": -0.5}]
    with pytest.raises(ValueError, match="have no reward 'task'"):
        assign_advantages(_rollouts(with_reward=False), objective_for_variant("grpo").weights_at(0), pg)


def test_bad_configurations_have_clear_errors():
    with pytest.raises(ValueError, match=r"unknown UniAPL variant 'agrpo'; did you mean 'a-grpo'\?"):
        objective_for_variant("agrpo")
    with pytest.raises(ValueError, match=r"did you mean 'chord'"):
        objective_for_variant("chrod")
    assert objective_for_variant(" GRPO ").variant == "grpo"
    assert objective_for_variant("SFT → GRPO").variant == "sft->grpo"
    with pytest.raises(ValueError, match=r"objective.stages\[0\].lambda_adv must be >= 0"):
        objective_for_variant("a-grpo", lambda_adv=-0.1)
    with pytest.raises(ValueError, match=r"objective.stages\[0\].beta must be >= 0"):
        objective_for_variant("grpo", beta=-1.0)
    with pytest.raises(ValueError, match=r"objective.stages\[0\].mu.value must be in \[0, 1\]"):
        objective_for_variant("uniapl", mu=1.5)
    with pytest.raises(ValueError, match=r"objective.pg.clip_high must be >= 0"):
        objective_for_variant("grpo", pg=PolicyGradientConfig(clip_high=-0.1))
    with pytest.raises(ValueError, match=r"objective.pg.kl_estimator is 'k5'"):
        objective_for_variant("grpo", pg=PolicyGradientConfig(kl_estimator="k5"))
    cfg = objective_for_variant("grpo")
    cfg.stages = [Stage("x", mu=MuSchedule(value=0.5), rollout_prompts="none")]
    with pytest.raises(ValueError, match=r"objective.stages\[0\] has policy-gradient or KL weight"):
        cfg.validate()
    cfg.stages = [Stage("a", steps=None, mu=MuSchedule(value=1.0), rollout_prompts="none"), Stage("b")]
    with pytest.raises(ValueError, match=r"objective.stages\[0\].steps is None but it is not the last stage"):
        cfg.validate()
    cfg.stages = [Stage("x", lambda_adv=0.1, lambda_shape=0.1)]
    with pytest.raises(ValueError, match="sets both lambda_adv and lambda_shape"):
        cfg.validate()
    with pytest.raises(ValueError, match=r"objective.stages\[0\].shape_norm is 'sum'; choose one of \('joint', 'per_term'\)"):
        objective_for_variant("reward-shaping", shape_norm="sum")
