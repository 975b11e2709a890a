"""Saving and loading a training checkpoint on every rank, atomically, with failures agreed on.

A save writes into `iter_XXXXXXX.partial-<token>`: every rank its shards of the sharded state
(`weights/`, Megatron's distributed format) and its per-rank state (`ranks/rank{r}.pt`), then
rank 0 the run state (`state.json`), any extra files, and last the marker. Rank 0 renames the
directory into place, points `latest` at it and prunes old ones (`layout.py`). A crash at any
point leaves `latest` naming a complete checkpoint, never a half-written one.

Every phase ends with an agreement (an all-reduce of "did my part succeed"), so a rank whose
write fails (a full disk, a read-only mount) does not leave the others waiting in a barrier:
all ranks raise `CheckpointError`, rank 0 names the cause and removes the partial directory.
Loading works the same way and raises `UnreadableCheckpointError` on every rank when any rank
could not read its part, which lets a resume fall back to an older checkpoint together.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_uniapl.checkpoint import layout
from megatron_uniapl.checkpoint.layout import (
    CheckpointError,
    UnreadableCheckpointError,
)
from megatron_uniapl.checkpoint.state import (
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from megatron_uniapl.checkpoint.storage import write_failure
from megatron_uniapl.checkpoint.writer_process import shield_writer_helper
from megatron_uniapl.convert.dcp_check import WeightsCheckError, check_weights_dir
from megatron_uniapl.convert.mcore_checkpoint import new_token

logger = logging.getLogger(__name__)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_ranks_ok(ok: bool) -> bool:
    """Collective: True when `ok` holds on every rank."""
    if world() == 1:
        return ok
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _agreed(action) -> Exception | None:
    """Run `action` here, then agree over all ranks. Returns this rank's error (None if it
    succeeded); raises `_PhaseFailed` on every rank when any rank failed."""
    error = None
    try:
        action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - any failure must reach the agreement, not skip it
        error = err  # (PyTorch's CheckpointException derives from BaseException)
    if not all_ranks_ok(error is None):
        raise _PhaseFailed(error)
    return None


class _PhaseFailed(Exception):
    def __init__(self, local: Exception | None):
        super().__init__(str(local) if local else "another rank failed")
        self.local = local


def _one_line(err: Exception | None) -> str:
    if err is None:
        return "another rank failed (see its message)"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def save_checkpoint(
    root: str | Path, step: int, sharded: dict, common: dict, per_rank: dict | None = None,
    keep_last: int | None = None, meta: dict | None = None, write_extra=None,
) -> Path:
    """Collective. `sharded`: a Megatron sharded state dict (model, optimizer, ...); `common`:
    rank 0's run state, plain data (stored as JSON); `per_rank`: this rank's state, tensors and
    plain data; `write_extra(stage_dir)`: rank 0 writes more files before the marker; `meta`:
    extra marker fields (plain data). Returns the published directory."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    tok = new_token()
    final = root / layout.iteration_name(step)
    stage = root / f"{final.name}.partial-{tok}"
    me = rank()
    start = time.time()

    def prepare():
        if me == 0:
            root.mkdir(parents=True, exist_ok=True)
            layout.clean_leftovers(root)
            (stage / "weights").mkdir(parents=True)
            (stage / layout.RANK_DIR).mkdir()

    def write_own():
        write_tensors(stage / layout.RANK_DIR / f"rank{me}.pt", per_rank or {})

    def finish():
        if me != 0:
            return
        write_json(stage / layout.STATE_FILE, common)
        if write_extra is not None:
            write_extra(stage)
        marker = {"format": layout.FORMAT, "step": step, "world_size": world(), **(meta or {})}
        write_json(stage / layout.MARKER, marker)
        layout.replace_iteration(stage, final)

    shield_writer_helper()
    try:
        _agreed(prepare)
        _agreed(lambda: dist_checkpointing.save(sharded, str(stage / "weights")))
        _agreed(write_own)
        _agreed(finish)
    except _PhaseFailed as failed:
        raise _save_error(root, stage, step, failed.local) from None
    if me == 0:
        # Published: the rest only tidies up, and a failure here loses nothing.
        try:
            layout.write_latest(root, final.name)
            if keep_last:
                layout.prune(root, keep_last)
        except OSError as err:
            logger.warning("checkpoint %s is complete, but updating %s or pruning failed: %s",
                           final, layout.LATEST, err)
        logger.info("saved checkpoint %s in %.1f s", final, time.time() - start)
    all_ranks_ok(True)  # the others wait until `latest` names the new checkpoint
    return final


def _save_error(root: Path, stage: Path, step: int, local: Exception | None) -> CheckpointError:
    cause = write_failure(root) if root.is_dir() else None
    if rank() == 0:
        shutil.rmtree(stage, ignore_errors=True)
    newest = layout.latest_checkpoint(root)
    kept = f"the newest complete checkpoint is {newest.name}" if newest else "no complete checkpoint exists yet"
    return CheckpointError(
        f"checkpoint.dir={root}: saving step {step} failed: {cause or _one_line(local)}; "
        f"the partial save was removed and {kept}")


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` read."""

    sharded: dict
    """The loaded sharded state (model, optimizer) in the shapes that were asked for."""
    common: dict
    """Rank 0's run state (`state.json`), the same on every rank."""
    per_rank: dict
    """This rank's state (`ranks/rank{r}.pt`); empty when the checkpoint has none for it."""
    marker: dict
    """The marker (`uniapl_train.json`): step, world size, model and optimizer settings."""


def load_checkpoint(path: str | Path, sharded: dict) -> LoadedCheckpoint:
    """Collective. Reads the checkpoint at `path` into the shapes of `sharded`.

    Raises `UnreadableCheckpointError` on every rank when any rank cannot read its part
    (truncated or missing files, refused content); the caller may then try an older one."""
    from megatron.core import dist_checkpointing

    path = Path(path)
    out: dict = {}

    def read_small():
        out["marker"] = layout.read_marker(path)
        out["common"] = read_json(path / layout.STATE_FILE)
        own = path / layout.RANK_DIR / f"rank{rank()}.pt"
        if own.is_file() or out["marker"].get("world_size") == world():
            out["per_rank"] = read_tensors(own)
        else:
            out["per_rank"] = {}
        check_weights_dir(path / "weights")

    def read_weights():
        out["sharded"] = dist_checkpointing.load(sharded, str(path / "weights"))

    for action in (read_small, read_weights):
        try:
            _agreed(action)
        except _PhaseFailed as failed:
            local = failed.local
            if isinstance(local, CheckpointError) and not isinstance(local, UnreadableCheckpointError):
                raise local from None
            readable_message = isinstance(local, (UnreadableCheckpointError, WeightsCheckError))
            message = str(local) if readable_message else f"{path}: {_one_line(local)}"
            raise UnreadableCheckpointError(message) from None
    return LoadedCheckpoint(out["sharded"], out["common"], out["per_rank"], out["marker"])

