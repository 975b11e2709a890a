"""The metrics of one training step, built in one place from what the step produced.

The loop hands over a `StepOutcome` (the samples it trained on, the optimizer's `StepResult`,
the co-location phase timings, the discriminator's update metrics, the wall time) and gets back
one flat dict of namespaced metrics:

    loss/*, optim/*        from the optimizer step (last pipeline stage, gathered to rank 0)
    rollout/*, reward/*    from the rollout samples (lengths, task reward of the rollouts whose
                           prompt has constraints, engine/trainer mismatch; metrics/rollouts.py)
    disc/*                 discriminator scores and its own updates
    time/*, mem/*          every phase of the step, the rest as time/other_s (metrics/timing.py)
    throughput/*, perf/*   tokens per second, model TFLOP/s per GPU, MFU on a GPU
    objective/*            the step's weights (mu, lambda_adv)

`summarize` turns a run's history into the before/after table the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from megatron_uniapl.data.sample import Sample
from megatron_uniapl.metrics.rollouts import (
    constraint_pass_rates,
    equal_group_metrics,
    task_reward_metrics,
    truncation_metrics,
)
from megatron_uniapl.metrics.timing import with_other_time
from megatron_uniapl.model.presets import peak_tflops, training_flops_per_token

if TYPE_CHECKING:
    from megatron_uniapl.config.objective import StepWeights
    from megatron_uniapl.model.distributed import StepResult
    from megatron_uniapl.model.hf_config import Qwen3Arch


@dataclass
class StepOutcome:
    """What one optimizer step produced: the inputs of its metrics."""

    weights: StepWeights
    """The objective's weights at this step."""
    demos: list[Sample]
    """Demonstrations trained on (with the SFT term) or answered (A-SFT)."""
    rollouts: list[Sample]
    """Scored rollout samples of this step (all data-parallel ranks' share)."""
    result: StepResult
    """The optimizer step's report (loss metrics on the last pipeline stage)."""
    elapsed_s: float
    """Wall time of the step up to its metrics (a checkpoint save after it is added to the row
    by `timing.with_checkpoint_time`; throughput and MFU leave it out)."""
    phase_metrics: dict[str, float] = field(default_factory=dict)
    """Seconds of each phase of the step (`time/<phase>_s`: the co-location round's and the
    loop's own, which do not overlap) and the rollout round's memory."""
    disc_metrics: dict[str, float] = field(default_factory=dict)
    """The co-trained discriminator's update metrics."""
    sampling_metrics: dict[str, float] = field(default_factory=dict)
    """What dynamic sampling rolled out and kept (algorithm/dynamic_sampling.py)."""
    has_discriminator: bool = False
    """Whether rollouts carry a discriminator score."""


def mismatch_metrics(batches: list[dict]) -> dict[str, float]:
    """Engine vs trainer log-probs of the sampled tokens (before the update: the same weights)."""
    diffs = [(b["old_logprobs"] - b["rollout_logprobs"]).abs()[b["rollout_mask"] > 0]
             for b in batches if b.get("old_logprobs") is not None and b["rollout_mask"].any()]
    if not diffs:
        return {}
    d = torch.cat(diffs)
    return {"rollout/logprob_mismatch_mean": d.mean().item(), "rollout/logprob_mismatch_max": d.max().item()}


def mfu_metrics(arch: Qwen3Arch, trained: list[Sample], elapsed_s: float, world: int) -> dict[str, float]:
    """Model TFLOP/s of the step's training tokens per GPU, and MFU against the GPU's bf16 peak.

    Counts the forward+backward of the training pass only (not generation nor the log-prob
    recomputation), per sample at its own length; on a CPU only the TFLOP/s is reported."""
    flops = sum(training_flops_per_token(arch, s.num_tokens) * s.num_tokens for s in trained)
    per_gpu = flops / elapsed_s / 1e12 / world
    out = {"perf/model_tflops_per_gpu": per_gpu}
    peak = peak_tflops()
    if peak:
        out["perf/mfu"] = per_gpu / peak
    return out


def from_last_stage(metrics: dict) -> dict:
    """Loss metrics exist on the last pipeline stage; every rank gets them (rank 0 logs them).

    Collective over the world."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, metrics)
    return next((m for m in reversed(gathered) if m), {})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def step_metrics(outcome: StepOutcome, arch: Qwen3Arch, world: int, nodes: int) -> dict[str, float]:
    """The flat metrics dict of one step. Collective (gathers the loss metrics)."""
    o, r = outcome, outcome.result
    trained = (o.demos if o.weights.mu > 0 else []) + o.rollouts
    metrics = {
        **from_last_stage(r.metrics), **with_other_time(o.phase_metrics, o.elapsed_s), **o.disc_metrics,
        **o.sampling_metrics,
        "objective/mu": o.weights.mu, "objective/lambda_adv": o.weights.lambda_adv,
        "optim/lr": r.learning_rate, "optim/grad_norm": r.grad_norm, "optim/skipped": float(r.skipped),
        "throughput/tokens_per_s": sum(s.num_tokens for s in trained) / o.elapsed_s,
        "gpus": world, "nodes": nodes,
        **mfu_metrics(arch, trained, o.elapsed_s, world),
    }
    if o.rollouts:
        metrics.update(task_reward_metrics(o.rollouts))
        metrics.update(equal_group_metrics(o.rollouts, with_task=o.weights.mu < 1.0,
                                           with_disc=o.has_discriminator and (o.weights.lambda_adv > 0
                                                                          or o.weights.lambda_shape > 0)))
        metrics.update(truncation_metrics(o.rollouts))
        metrics.update(constraint_pass_rates(o.rollouts))
        metrics["rollout/response_len_mean"] = _mean([len(s.response_ids) for s in o.rollouts])
        metrics["rollout/count"] = float(len(o.rollouts))  # trained on (after dynamic sampling)
        if o.has_discriminator:
            metrics["disc/score_mean"] = _mean([s.disc_score for s in o.rollouts])
    if o.demos:
        metrics["demo/response_len_mean"] = _mean([len(s.response_ids) for s in o.demos])
    return metrics


SUMMARY_KEYS = ("reward/task_mean", "disc/score_mean", "loss/sft", "rollout/response_len_mean")
"""The metrics of the before/after table."""


def summarize(history: list[dict], window: int = 10) -> str:
    """Before/after table of a history: means over its first and last `window` steps."""
    lines = []
    for key in SUMMARY_KEYS:
        values = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if len(values) < 2:
            continue
        w = min(window, len(values) // 2)
        first = sum(v for _, v in values[:w]) / w
        last = sum(v for _, v in values[-w:]) / w
        lines.append(f"{key:28s} steps {values[0][0]:>4}-{values[w - 1][0]:<4} {first:8.3f}   ->   "
                     f"steps {values[-w][0]:>4}-{values[-1][0]:<4} {last:8.3f}")
    return "\n".join(lines) if lines else "nothing to summarize (no steps ran)"
