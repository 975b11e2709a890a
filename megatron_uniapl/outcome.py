"""How an invocation of the trainer ends: its exit status, the one line it prints, and the record
it leaves in `<run_dir>/run_status.json`.

Exit status: 0 finished (or already complete); 2 bad input, nothing started (config, data,
checkpoint, storage); 1 a run that had started failed (a save on a full disk, a non-finite
streak); 75 stopped on request after saving a checkpoint (`stop.py`); 130 interrupted at once
by a second Ctrl-C. An error is one line on stderr, never a traceback; before training starts
every rank reaches the same verdict, so rank 0 alone prints it.

A launcher cannot see these codes through torchrun (it exits 1 whenever a worker exits non-zero,
75 included, and terminates the other workers), so rank 0 also records the outcome in
`run_status.json`: status ("complete", "stopped", "failed", "refused"), exit_code, step, checkpoint (the
newest one, or null) and message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STATUS_FILE = "run_status.json"
STOP_EXIT_CODE = 75
"""Exit status of a run stopped on request after saving (EX_TEMPFAIL: try again)."""


class RunFailed(RuntimeError):
    """A run that had started stopped on a failure the message names (exit status 1)."""


def _rank() -> int:
    from megatron_uniapl.metrics.sinks import rank

    return rank()


def user_errors() -> tuple:
    """Errors that mean "change the input"."""
    from megatron_uniapl.checkpoint import CheckpointError
    from megatron_uniapl.config.yaml_io import ConfigError
    from megatron_uniapl.convert.hf_io import CheckpointMismatchError
    from megatron_uniapl.data.jsonl import DataError
    from megatron_uniapl.device import DeviceError
    from megatron_uniapl.model.hf_config import UnsupportedModelError

    return (DataError, ConfigError, CheckpointError, UnsupportedModelError, CheckpointMismatchError, FileNotFoundError,
            DeviceError)


def write_status(run_dir: str | Path, status: str, exit_code: int, step: int | None,
                 checkpoint: str | None, message: str) -> None:
    """Rank 0: record the outcome atomically; never raises (the run's outcome matters more)."""
    if _rank() != 0:
        return
    record = {"status": status, "exit_code": exit_code, "step": step, "checkpoint": checkpoint,
              "message": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path = Path(run_dir) / STATUS_FILE
        tmp = path.with_name(f".{STATUS_FILE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("could not write %s: %s", STATUS_FILE, err)


def _record(config, status: str, code: int, message: str) -> None:
    from megatron_uniapl.checkpoint import CheckpointError, latest_checkpoint, read_marker

    newest = latest_checkpoint(config.checkpoint_dir)
    try:
        step = read_marker(newest)["step"] if newest else None
    except CheckpointError:
        step = None
    write_status(config.logging.run_dir, status, code, step, newest.name if newest else None, message)


def print_error(err: Exception, every_rank: bool) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and every_rank:
        print(f"error [rank {_rank()}]: {err}", file=sys.stderr)
    elif _rank() == 0:
        print(f"error: {err}", file=sys.stderr)


def failed(config, err: Exception, code: int, every_rank: bool) -> int:
    """Print the error line and record it (status "refused" for bad input, exit status 2, when
    the run directory exists; a failed start creates nothing else)."""
    print_error(err, every_rank)
    if config is not None and Path(config.logging.run_dir).is_dir():
        _record(config, "refused" if code == 2 else "failed", code, str(err))
    return code


def stopped(stop: Exception) -> int:
    if _rank() == 0:
        print(stop, file=sys.stderr)
    return STOP_EXIT_CODE


def interrupted() -> int:
    print("interrupted (a second Ctrl-C); the newest checkpoint is intact", file=sys.stderr)
    return 130


def finished(config) -> int:
    _record(config, "complete", 0, "finished")
    return 0


def report_complete(config, step: int, summarize) -> int:
    """A rerun of a finished run: say so and summarize its record; nothing is started."""
    from megatron_uniapl.metrics.sinks import read_record

    if _rank() == 0:
        print(f"{config.name}: the run is complete (step {step} of {config.train.steps} is checkpointed in "
              f"{config.checkpoint_dir}); nothing to do. Its record, {config.logging.run_dir}/metrics.jsonl:")
        print(summarize(read_record(config.logging.run_dir)))
    return 0
