"""The KL reference refreshed at a stage boundary, and kept across a resume.

A stage with `refresh_reference` makes the reference policy the current policy as it begins. The
training checkpoint does not hold the reference (it is normally the initial model, rebuilt from
the model's own files), so the refreshed reference is written once, at the refresh, as a weights
checkpoint of its own beside the training checkpoints (`reference_iter_<step>`). A run resumed
after that step loads it; a run resumed exactly at that step refreshes again, as the first run
did. Writing it is atomic (a staging directory published by a rename), like every checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from megatron_uniapl.checkpoint.layout import CheckpointError, iteration_name
from megatron_uniapl.convert.mcore_checkpoint import (
    load_model_weights,
    new_token,
    publish,
    save_model_weights,
    staging_dir,
)

logger = logging.getLogger(__name__)

WEIGHTS = "weights"


def reference_dir(checkpoint_dir: str | Path, step: int) -> Path:
    """Where the reference refreshed at global step `step` is kept."""
    return Path(checkpoint_dir) / f"reference_{iteration_name(step)}"


def _unwrapped(chunk: torch.nn.Module) -> torch.nn.Module:
    return getattr(chunk, "module", chunk)


def copy_policy_into_reference(policy_chunks: list, reference_chunks: list) -> None:
    """Every parameter and buffer of the (DDP-wrapped) policy chunks into the frozen reference
    chunks of the same layout; shapes and names must match."""
    with torch.no_grad():
        for policy, reference in zip(policy_chunks, reference_chunks, strict=True):
            source = _unwrapped(policy).state_dict(keep_vars=True)
            for name, target in reference.state_dict(keep_vars=True).items():
                if torch.is_tensor(target) and name in source:
                    target.copy_(source[name])


def refresh(policy_chunks: list, reference_chunks: list, checkpoint_dir: str | Path | None, step: int) -> None:
    """Collective: the reference becomes the policy; saved for a resume when checkpoints are on."""
    copy_policy_into_reference(policy_chunks, reference_chunks)
    if checkpoint_dir is None:
        return
    out = reference_dir(checkpoint_dir, step)
    stage = staging_dir(out, new_token())
    save_model_weights(reference_chunks, stage / WEIGHTS)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        publish(stage, out)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    logger.info("the KL reference is now the policy at step %d (saved in %s)", step, out)


def restore(reference_chunks: list, checkpoint_dir: str | Path, refreshed_at: list[int]) -> None:
    """Collective, on resume: load the latest reference refreshed before the resumed step."""
    if not refreshed_at:
        return
    path = reference_dir(checkpoint_dir, refreshed_at[-1])
    if not (path / WEIGHTS).is_dir():
        raise CheckpointError(
            f"{path}: missing; the run refreshed its KL reference at step {refreshed_at[-1]} "
            f"(refresh_reference) and a resume after that step needs it")
    load_model_weights(reference_chunks, path / WEIGHTS)
    logger.info("KL reference restored from %s", path)
