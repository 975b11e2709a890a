"""Can the run write where it must? Checked before the first step, and named when a save fails.

A read-only or full checkpoint directory used to be found by the first save, after a full
training step (and, for a full disk, reported as "RuntimeError: Worker failure" from a writer
thread, with ENOSPC nowhere in the message). These checks run at start, and `write_failure`
turns a failed save into the cause a user can act on.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from megatron_uniapl.checkpoint.layout import CheckpointError, token

GIB = 2**30
_PROBE_BYTES = 1 << 20


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _describe(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return err.strerror or str(err)


def check_writable(directory: str | Path, what: str) -> None:
    """Create `directory` if needed and write (then remove) a small probe file in it.

    `what` names the setting (e.g. "checkpoint.dir") for the error message."""
    directory = Path(directory)
    probe = directory / f".write-probe-{token()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise CheckpointError(f"{what}={directory}: cannot write there: {_describe(err)}") from None
    finally:
        _remove_quietly(probe)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def free_bytes(directory: str | Path) -> int:
    return shutil.disk_usage(_existing_ancestor(Path(directory))).free


def check_free_space(directory: str | Path, need_bytes: int, what: str) -> None:
    """CheckpointError when the file system of `directory` has less than `need_bytes` free."""
    free = free_bytes(directory)
    if free < need_bytes:
        raise CheckpointError(
            f"{what}={directory}: {free / GIB:.2f} GiB free, but a checkpoint of this run needs about "
            f"{need_bytes / GIB:.2f} GiB; free space there or point {what} elsewhere")


def checkpoint_bytes_estimate(num_parameters: int, param_bytes: int, with_optimizer: bool) -> int:
    """Bytes of one training checkpoint: the weights, plus fp32 Adam moments and (for 16-bit
    models) fp32 main weights when the optimizer is saved; 5% for metadata and small files."""
    per_param = param_bytes + ((8 + (4 if param_bytes < 4 else 0)) if with_optimizer else 0)
    return int(num_parameters * per_param * 1.05)


def directory_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_failure(directory: str | Path) -> str | None:
    """Why writing under `directory` fails now, or None if a 1 MiB probe write succeeds.

    Called after a save failed: the writer threads' own errors do not carry the cause."""
    directory = Path(directory)
    probe = directory / f".write-probe-{token()}"
    try:
        with probe.open("wb") as f:
            f.write(b"\0" * _PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return _describe(err)
    finally:
        _remove_quietly(probe)
    return None
