"""The checkpoint directory on disk: names, the completion marker, `latest`, and cleaning up.

Torch-free: the pre-flight checks read markers before any process group exists.

    <checkpoint_dir>/
      iter_0000020/              complete when uniapl_train.json exists (written last)
      iter_0000030.partial-<t>/  a save in progress, or one a crash interrupted
      iter_0000010.deleting-<t>/ an old checkpoint being pruned (renamed first, then deleted)
      iter_0000040.unreadable-<t>/  a checkpoint that failed to load, set aside (never deleted)
      latest                     the name of the newest complete iteration

Every state change is a rename: a save is published by renaming its staging directory, and a
prune renames the old directory out of the `iter_XXXXXXX` namespace before deleting it, so an
interruption never leaves a directory that looks like a checkpoint but is not.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from megatron_uniapl.data.manifest import replace_dir_atomic

logger = logging.getLogger(__name__)

FORMAT = "megatron_uniapl.train/2"
"""Format of a training checkpoint. /1 stored pickled `common.pt` and RNG files; it is refused."""
MARKER = "uniapl_train.json"
"""The file that makes an iteration directory complete (written last)."""
LATEST = "latest"
STATE_FILE = "state.json"
"""Rank 0's run state: `{part name: part.state_dict()}` as JSON."""
RANK_DIR = "ranks"
"""Per-rank state files: `rank{r}.pt`, tensors and plain data only."""
_ITER = re.compile(r"^iter_(\d{7})$")
_LEFTOVER = re.compile(r"^iter_\d{7}\.(partial|deleting)-[0-9a-f]+$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (incomplete, from another model or setting, unreadable)."""


class UnreadableCheckpointError(CheckpointError):
    """A complete-looking checkpoint whose files cannot be read (truncated, corrupt, refused)."""


def iteration_name(step: int) -> str:
    return f"iter_{step:07d}"


def token() -> str:
    return uuid.uuid4().hex[:12]


def complete_iterations(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    out = []
    root = Path(root)
    if root.is_dir():
        for child in root.iterdir():
            m = _ITER.match(child.name)
            if m and (child / MARKER).is_file():
                out.append((int(m.group(1)), child))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint `latest` names; if that file is missing or stale, the newest complete one."""
    candidates = resume_candidates(root)
    return candidates[0] if candidates else None


def resume_candidates(root: str | Path) -> list[Path]:
    """Complete checkpoints in the order a resume tries them: the one `latest` names, then the
    others newest first (the fallbacks when the newest cannot be read)."""
    root = Path(root)
    done = [path for _, path in reversed(complete_iterations(root))]
    pointer = root / LATEST
    if pointer.is_file():
        try:
            target = root / pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            target = None
        if target in done:
            return [target] + [p for p in done if p != target]
        logger.warning("%s names %s, which is not a complete checkpoint; using the newest complete one",
                       pointer, target)
    return done


def read_marker(path: str | Path) -> dict:
    """The marker of the checkpoint at `path`; CheckpointError when it is not a usable one."""
    path = Path(path)
    marker_file = path / MARKER
    if not marker_file.is_file():
        raise CheckpointError(f"{path}: no {MARKER}; not a complete training checkpoint")
    try:
        marker = json.loads(marker_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableCheckpointError(f"{marker_file}: unreadable ({err})") from None
    if not isinstance(marker, dict):
        raise UnreadableCheckpointError(f"{marker_file}: not a JSON object")
    if marker.get("format") == "megatron_uniapl.train/1":
        raise CheckpointError(
            f"{path}: written by an older version that stored pickled state (common.pt), which is "
            f"not loaded because unpickling can run code; its model weights still export with "
            f"tools/convert_hf.py, and model.init_checkpoint={path} starts a new run from them")
    if marker.get("format") != FORMAT:
        raise CheckpointError(f"{marker_file}: format {marker.get('format')!r}, expected {FORMAT!r}")
    return marker


def _remove_tree(path: Path) -> None:
    """Rename `path` out of the iteration namespace, then delete it: a crash mid-delete leaves a
    `*.deleting-*` directory that the next start removes, never a half-deleted `iter_*`."""
    doomed = path.parent / f"{path.name}.deleting-{token()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(root: str | Path, keep_last: int) -> None:
    """Delete complete checkpoints beyond the newest `keep_last` (rank 0, after a publish)."""
    for _, old in complete_iterations(root)[:-keep_last]:
        _remove_tree(old)


def replace_iteration(stage: Path, final: Path) -> None:
    """Publish `stage` as `final`; an existing `final` (a re-save of the same step after a
    resume) is moved out of the `iter_*` namespace first (`*.deleting-*`) and deleted after."""
    replace_dir_atomic(stage, final, "deleting")


def clean_leftovers(root: str | Path) -> list[str]:
    """Remove what interrupted saves and prunes left (rank 0, at start and before each save):
    `*.partial-*` and `*.deleting-*` directories, and `iter_*` directories without a marker (an
    older version pruned in place). Returns the names removed."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for child in sorted(root.iterdir()):
        incomplete_iter = _ITER.match(child.name) and child.is_dir() and not (child / MARKER).exists()
        if _LEFTOVER.match(child.name) or incomplete_iter:
            logger.warning("removing %s (left by an interrupted save or prune)", child)
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    for child in root.glob(f"{LATEST}.tmp-*"):
        child.unlink(missing_ok=True)
    return removed


def set_aside(path: Path, reason: str) -> Path:
    """Rename a checkpoint that failed to load to `*.unreadable-*` (kept for inspection, no longer
    a resume candidate)."""
    aside = path.parent / f"{path.name}.unreadable-{token()}"
    os.replace(path, aside)
    logger.error("checkpoint %s cannot be loaded (%s); moved it to %s", path, reason, aside.name)
    return aside


def write_latest(root: Path, name: str) -> None:
    tmp = root / f"{LATEST}.tmp-{token()}"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, root / LATEST)
