"""Which learning-rate schedule each optimizer step belongs to (torch-free).

By default one schedule (warm-up, then `optimizer.decay` down to `optimizer.min_lr`) spans the
whole run. A staged recipe whose stages set their own `lr` (SFT at 1e-5, then GRPO at 1e-6, say)
needs more: each stage then runs a schedule of its own, restarted at the stage's first step,
with the stage's peak, floor and warm-up (the optimizer section's where a stage leaves one unset)
and a decay over the stage's own length. Without that a staged baseline is handicapped: its SFT
stage would run at the RL learning rate, or its RL stage would inherit the tail of the SFT decay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from megatron_uniapl.config.objective import Stage, stage_starts


@dataclass(frozen=True)
class StageLR:
    """The learning-rate schedule of one stage."""

    start: int
    """Global optimizer step at which the stage (and its schedule) begins."""
    steps: int
    """Steps the schedule decays over: the stage's length (the last stage: to `train.steps`)."""
    lr: float
    """Peak learning rate."""
    min_lr: float
    """Learning rate at the end of the decay."""
    warmup_steps: int
    """Linear warm-up from 0 to `lr` at the start of the stage."""


def stage_lr_plan(stages: Sequence[Stage], lr: float, min_lr: float, warmup_steps: int,
                  total_steps: int) -> list[StageLR] | None:
    """One `StageLR` per stage when any stage sets `lr`; None for the single run-long schedule.

    `lr`, `min_lr`, `warmup_steps`: the optimizer section's, for what a stage leaves unset.
    `total_steps`: `train.steps`. A stage that starts at or after `total_steps` is left out.
    """
    if not any(s.lr is not None for s in stages):
        return None
    plan = []
    for stage, start in zip(stages, stage_starts(list(stages))):
        if start >= total_steps:
            break
        length = min(stage.steps if stage.steps is not None else total_steps, total_steps - start)
        peak = stage.lr if stage.lr is not None else lr
        floor = stage.min_lr if stage.min_lr is not None else min(min_lr, peak)
        warmup = stage.warmup_steps if stage.warmup_steps is not None else warmup_steps
        plan.append(StageLR(start, length, peak, floor, warmup))
    return plan


def stage_index(plan: Sequence[StageLR], step: int) -> int:
    """The index in `plan` of the schedule global `step` belongs to (the last one past the end)."""
    for i, s in enumerate(plan):
        if step < s.start + s.steps:
            return i
    return len(plan) - 1
