"""The loop's counters, and what the loop does about non-finite steps.

A step is non-finite when its gradients are (the update was then skipped on every rank) or when
the weights are after the update: a huge learning rate gives finite gradients and weights that
overflow in the next forward. The weight check sums the squared float32 norms of the local
parameters, which is infinite as soon as one weight passes ~1e19 (or is itself NaN/inf).

During a streak of non-finite steps no checkpoint is published (the retained checkpoints would
otherwise hold blown-up weights); after `train.max_nonfinite_steps` in a row the run stops with
`NonFiniteError`, naming the steps and the newest checkpoint, which predates the streak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_uniapl.outcome import RunFailed

logger = logging.getLogger(__name__)


class NonFiniteError(RunFailed):
    """Too many non-finite steps in a row; the message says which and what to change."""


@dataclass
class LoopState:
    """The training loop's counters: a resumable part of the run (`Stateful`)."""

    step: int = 0
    """Optimizer steps taken (the next step is step + 1)."""
    nonfinite_in_a_row: int = 0
    """Consecutive non-finite steps ending at `step` (0 after a finite one)."""

    def state_dict(self) -> dict:
        return {"step": self.step, "nonfinite_in_a_row": self.nonfinite_in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])

    @property
    def in_streak(self) -> bool:
        return self.nonfinite_in_a_row > 0


def weights_finite(model_chunks: list) -> bool:
    """Collective: whether every rank's parameters are finite and their squares sum to a finite
    float32 (a weight beyond ~1e19 fails this too). One reduction per parameter on its device,
    without a float32 copy of it, and one host sync."""
    total = torch.zeros((), dtype=torch.float32)
    with torch.no_grad():
        for chunk in model_chunks:
            for p in chunk.parameters():
                norm = torch.linalg.vector_norm(p.detach(), dtype=torch.float32)
                total = total.to(norm.device) + norm * norm
    bad = (~torch.isfinite(total)).to(torch.float32).reshape(1)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0.0


def count_step(loop: LoopState, gradients_skipped: bool, model_chunks: list) -> bool:
    """Collective. Count the step just taken (`loop.step` already advanced) as finite or not."""
    finite = not gradients_skipped and weights_finite(model_chunks)
    if finite:
        if loop.nonfinite_in_a_row:
            logger.info("step %d is finite again after %d non-finite steps", loop.step, loop.nonfinite_in_a_row)
        loop.nonfinite_in_a_row = 0
        return True
    loop.nonfinite_in_a_row += 1
    what = "gradients (update skipped)" if gradients_skipped else "weights after the update"
    logger.warning("step %d: non-finite %s; %d in a row", loop.step, what, loop.nonfinite_in_a_row)
    return False


def check_streak(loop: LoopState, limit: int, newest_checkpoint) -> None:
    """NonFiniteError after more than `limit` non-finite steps in a row. `newest_checkpoint()`:
    the newest checkpoint's path or None, for the message."""
    if loop.nonfinite_in_a_row <= limit:
        return
    first = loop.step - loop.nonfinite_in_a_row + 1
    newest = newest_checkpoint()
    kept = f"the newest checkpoint, {newest.name}, predates them" if newest else "no checkpoint exists"
    raise NonFiniteError(
        f"steps {first}-{loop.step} were non-finite (more than train.max_nonfinite_steps={limit} in a "
        f"row): stopping; no checkpoint was published during them and {kept}; lower optimizer.lr "
        f"(or check the data), then rerun")


def save_unless_in_streak(rt, save) -> bool:
    """Save a checkpoint of `rt` unless its last step was non-finite (the weights may be blown
    up, and keep-last pruning would then delete the good checkpoints). Returns whether it saved."""
    if rt.loop.in_streak:
        logger.warning("step %d: checkpoint not saved: the last %d steps were non-finite", rt.step,
                       rt.loop.nonfinite_in_a_row)
        return False
    save(rt)
    return True
