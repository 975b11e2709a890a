"""Several optimizer updates per rollout batch: the split, the combination of the updates'
reports, and that pi_old stays fixed across them (so the ratio moves and clipping can act)."""

from __future__ import annotations

import pytest
import torch
from glue_utils import mixed_samples

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.algorithm.loss import UniAPLLoss, attach_logprobs, compute_logprobs, rank_batches
from megatron_uniapl.algorithm.minibatches import combine_updates, split_minibatches
from megatron_uniapl.config import load_config
from megatron_uniapl.config.variants import objective_for_variant
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import SampleKind
from megatron_uniapl.model.distributed import OptimizerSettings, StepResult, build_optimizer, train_step, wrap_ddp


def test_split_deals_demonstrations_and_whole_groups_round_robin():
    samples = mixed_samples(seed=0, demos=5, groups=3, group_size=2)
    assert split_minibatches(samples, 1) == [samples]
    parts = split_minibatches(samples, 2)
    demos = [s for s in samples if s.kind == SampleKind.DEMO]
    rollouts = [s for s in samples if s.kind == SampleKind.ROLLOUT]
    assert [s for s in parts[0] if s.kind == SampleKind.DEMO] == demos[0::2]
    assert [s for s in parts[1] if s.kind == SampleKind.DEMO] == demos[1::2]
    assert [s.group_id for s in parts[0] if s.kind == SampleKind.ROLLOUT] == [0, 0, 2, 2]
    assert [s.group_id for s in parts[1] if s.kind == SampleKind.ROLLOUT] == [1, 1]
    assert sorted(map(id, parts[0] + parts[1])) == sorted(map(id, samples))
    assert rollouts[0] in parts[0] and rollouts[2] in parts[1]
    with pytest.raises(ValueError, match=r"5 demonstrations and 3 rollout groups cannot fill 4 mini-batches"):
        split_minibatches(samples, 4)


def test_combined_updates_average_the_metrics_and_keep_the_first_learning_rate():
    a = StepResult(False, 2.0, 0.1, {"loss/total": 1.0, "pg_task/clip_frac": 0.0})
    b = StepResult(False, None, 0.05, {"loss/total": 3.0, "pg_task/clip_frac": 0.5, "sft/loss": 4.0})
    c = StepResult(True, 4.0, 0.02, {"loss/total": 2.0})
    combined = combine_updates([a, b, c])
    assert (combined.skipped, combined.grad_norm, combined.learning_rate) == (True, 3.0, 0.1)
    assert combined.metrics == {"loss/total": 2.0, "pg_task/clip_frac": 0.25, "sft/loss": 4.0}


def test_mini_batches_are_checked_against_the_batch():
    from megatron_uniapl.config.yaml_io import ConfigError

    config = load_config("recipes/tiny_cpu.yaml", ["train.mini_batches=2", "train.epochs=3"])
    assert config.train.updates_per_step == 6
    with pytest.raises(ConfigError, match=r"train\.mini_batches \(9\) exceeds data\.prompts_per_step"):
        load_config("recipes/tiny_cpu.yaml", ["train.mini_batches=9", "data.prompts_per_step=8"])
    with pytest.raises(ConfigError, match=r"train\.epochs must be >= 1"):
        load_config("recipes/tiny_cpu.yaml", ["train.epochs=0"])


def test_the_second_update_sees_the_ratio_to_the_policy_before_the_first(tiny_tied, megatron_world):
    """pi_old is computed once: update 2's approx_kl and ratio (from the training forward) equal
    those computed independently from log-probs before update 1 and after it."""
    from parity_utils import megatron_from_hf

    _, model = megatron_from_hf(tiny_tied)
    settings = OptimizerSettings(optimizer="sgd", lr=0.5, clip_grad=0.0)
    chunks = wrap_ddp([model], settings)
    optimizer, _ = build_optimizer(chunks, settings, total_steps=10)
    objective = objective_for_variant("grpo")
    weights = objective.weights_at(0)
    rollouts = [s for s in mixed_samples(seed=5, demos=0, groups=3, group_size=3) if s.kind == SampleKind.ROLLOUT]
    assign_advantages(rollouts, weights, objective.pg)
    packed = pack_samples(rollouts, 64)
    batches = rank_batches(packed, 0)
    attach_logprobs(chunks, batches, "old_logprobs")
    old = [b["old_logprobs"].clone() for b in batches]
    loss = UniAPLLoss(weights, objective.pg, packed.term_counts())
    first = train_step(chunks, optimizer, batches, loss)
    assert first.metrics["pg_task/approx_kl"] == 0.0 and first.metrics["pg_task/ratio"] == pytest.approx(1.0, abs=1e-6)
    after = compute_logprobs(chunks, batches)
    second = train_step(chunks, optimizer, batches, loss)
    mask = torch.cat([b["rollout_mask"].flatten() for b in batches]) > 0
    log_ratio = (torch.cat([a.flatten() for a in after]) - torch.cat([o.flatten() for o in old]))[mask].double()
    assert second.metrics["pg_task/approx_kl"] == pytest.approx((torch.expm1(log_ratio) - log_ratio).mean().item(), rel=1e-4)
    assert second.metrics["pg_task/ratio"] == pytest.approx(torch.exp(log_ratio).mean().item(), rel=1e-5)
    assert second.metrics["pg_task/approx_kl"] > 1e-6
