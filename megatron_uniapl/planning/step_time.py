"""A first-order model of one UniAPL step's time, per phase, for planning node counts.

It is a roofline estimate, not a measurement: measured `metrics.jsonl` files (tools/scaling_report.py)
are the truth, this predicts where a layout's time goes before a cluster is booked.

Generation (co-located vLLM, one engine per group of `vllm_tp` ranks, world / vllm_tp engines):
decoding is memory-bound, so each of the `max_tokens` sequential decode steps reads the weights
once; the compute of all generated tokens is a second bound. Per engine:

    t_decode  = max_tokens * (2 * N / vllm_tp) / (hbm_bw * hbm_eff)
    t_compute = (sequences / engines) * max_tokens * 2 * N / (vllm_tp * peak_flops * mfu)
    t_gen     = max(t_decode, t_compute)

Training: 6 N FLOPs per token (forward + backward), 2 N more with full recompute; extra forward
passes of 2 N per token for the old log-probs (always, rollout tokens) and the reference model
(when beta > 0), over the whole world at `mfu` of peak:

    t_train = tokens * (6 N + 2 N * recompute) + rollout_tokens * 2 N * (1 + [beta > 0])
              / (world * peak_flops * mfu)

Weight sync: every engine receives its shard of the bf16 weights over NVLink:
t_sync = 2 N / vllm_tp / nvlink_bw.
Defaults are H100 SXM figures (989 TFLOP/s dense bf16, 3.35 TB/s HBM, ~450 GB/s NVLink one way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """Throughput figures of one GPU."""

    peak_flops: float = 989e12
    """Dense bf16 FLOP/s."""
    mfu: float = 0.35
    """Fraction of peak reached by training and prefill-heavy compute."""
    hbm_bw: float = 3.35e12
    """Memory bandwidth in bytes/s."""
    hbm_eff: float = 0.6
    """Fraction of `hbm_bw` reached by decoding."""
    nvlink_bw: float = 450e9
    """NVLink bandwidth per direction in bytes/s."""


@dataclass(frozen=True)
class StepWork:
    """What one optimizer step does."""

    params: float
    """Model parameters N."""
    world: int
    """GPUs."""
    vllm_tp: int
    """vLLM tensor-parallel size (ranks per engine)."""
    sequences: int
    """Sequences generated per step (prompts * group size)."""
    max_tokens: int
    """Generated tokens per sequence (the decode length)."""
    train_tokens: int
    """Tokens trained per step (rollouts and demonstrations, prompts included)."""
    rollout_tokens: int
    """Tokens of rollout sequences (old log-probs and reference are recomputed on them)."""
    recompute: bool = False
    """Full activation recompute."""
    kl: bool = False
    """A reference model forward is needed (beta > 0)."""


@dataclass(frozen=True)
class StepTime:
    """Predicted seconds per phase."""

    generate: float
    train: float
    sync: float

    @property
    def total(self) -> float:
        return self.generate + self.train + self.sync


def step_time(work: StepWork, hw: Hardware = Hardware()) -> StepTime:
    """The phase times of `work` on `hw` (formulas in the module docstring)."""
    n = work.params
    engines = work.world // work.vllm_tp
    t_decode = work.max_tokens * (2 * n / work.vllm_tp) / (hw.hbm_bw * hw.hbm_eff) if work.sequences else 0.0
    t_compute = (work.sequences / engines) * work.max_tokens * 2 * n / (work.vllm_tp * hw.peak_flops * hw.mfu)
    flops = work.train_tokens * (6 * n + (2 * n if work.recompute else 0))
    flops += work.rollout_tokens * 2 * n * (1 + (1 if work.kl else 0))
    t_train = flops / (work.world * hw.peak_flops * hw.mfu)
    t_sync = 2 * n / work.vllm_tp / hw.nvlink_bw if work.sequences else 0.0
    return StepTime(max(t_decode, t_compute), t_train, t_sync)
