"""What happens to the optimizer at a stage boundary: its own learning-rate schedule per stage,
and optionally fresh moments.

`StagedLRSchedule` stands in for Megatron's scheduler when a recipe gives stages learning rates
of their own (config/lr_plan.py): it holds one Megatron scheduler for the current stage and
builds the next stage's at that stage's first step, so each stage warms up and decays on its own
(the scheduler, as Megatron's, advances on successful steps only). `reset_optimizer_state` zeroes
the optimizer's moments in place: the tensors stay the ones the checkpoint code shards, so a
checkpoint taken after a reset is an ordinary one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from megatron_uniapl.config.lr_plan import StageLR, stage_index
from megatron_uniapl.model.distributed import lr_scheduler


def _stage_scheduler_class(base_lr: float):
    """Megatron's scheduler with the stage's peak and floor in place of the parameter groups'.

    Megatron's parameter groups carry their own `max_lr`/`min_lr` (the optimizer's times a
    per-group multiplier), which its scheduler prefers to its own. They are also part of the key
    by which a saved optimizer state finds its groups, so they must not change from stage to
    stage: this scheduler leaves them alone and applies the multiplier to its own values."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    class StageScheduler(OptimizerParamScheduler):
        def get_lr(self, param_group: dict) -> float:
            mult = param_group.get("max_lr", base_lr) / base_lr
            return super().get_lr({"max_lr": self.max_lr * mult, "min_lr": self.min_lr * mult})

    return StageScheduler


class StagedLRSchedule:
    """Per-stage learning-rate schedules, switched by `enter(step)` before each optimizer step."""

    def __init__(self, optimizer, plan: Sequence[StageLR], decay_style: str, weight_decay: float, base_lr: float,
                 updates_per_step: int = 1):
        """`base_lr`: the learning rate the optimizer was built with (`optimizer.lr`);
        `updates_per_step`: optimizer updates per training step (a stage decays over its steps
        times this; warm-up counts updates, as the run-long schedule's does)."""
        if not plan:
            raise ValueError("a staged learning-rate schedule needs at least one stage")
        self.optimizer, self.plan = optimizer, list(plan)
        self.decay_style, self.weight_decay = decay_style, weight_decay
        self._scheduler_class = _stage_scheduler_class(base_lr)
        self.updates_per_step = updates_per_step
        self.index = 0
        self.inner = self._build(0)

    def _build(self, index: int):
        s = self.plan[index]
        decay = max(s.steps * self.updates_per_step, s.warmup_steps + 1)
        return lr_scheduler(self.optimizer, s.lr, s.min_lr, s.warmup_steps, decay,
                            self.decay_style, self.weight_decay, scheduler_class=self._scheduler_class)

    def enter(self, step: int) -> bool:
        """Before global optimizer `step`: use its stage's schedule (restarted when the stage
        changes). Returns True when `step` begins a new stage's schedule."""
        index = stage_index(self.plan, step)
        if index == self.index:
            return False
        self.index, self.inner = index, self._build(index)
        return True

    @property
    def num_steps(self) -> int:
        """Successful steps taken in the current stage's schedule."""
        return self.inner.num_steps

    def step(self, increment: int) -> None:
        self.inner.step(increment)

    def state_dict(self) -> dict:
        return {"stage": self.index, "schedule": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        index = int(state["stage"])
        if not 0 <= index < len(self.plan):
            raise ValueError(f"the checkpoint's learning-rate schedule is at stage {index}, but the "
                             f"recipe has {len(self.plan)} stage schedules")
        self.index, self.inner = index, self._build(index)
        self.inner.load_state_dict(state["schedule"])


def torch_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside a Megatron optimizer (one, or one per chained optimizer)."""
    chained = getattr(optimizer, "chained_optimizers", None)
    parts = chained if chained is not None else [optimizer]
    return [part.optimizer for part in parts]


def reset_optimizer_state(optimizer) -> int:
    """Zero every moment and step count of `optimizer` in place, so that its next step is the
    first step of a fresh optimizer from the current weights. Returns the tensors zeroed (0
    before the first step, when there is no state yet)."""
    zeroed = 0
    with torch.no_grad():
        for inner in torch_optimizers(optimizer):
            for state in inner.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
                        zeroed += 1
    return zeroed
