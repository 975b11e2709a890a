"""Stopping a run on request: the trainer's side of the stop contract.

SIGTERM (what Slurm sends at a time limit or on scancel, and what torchrun forwards to its
workers), SIGINT (Ctrl-C) and the existence of the file named by `UNIAPL_STOP_FILE` are stop
requests. A request only sets a flag; at the next step boundary the ranks agree on it (an
all-reduce: a signal may reach some ranks before others), save a checkpoint together, shut the
engine down, log one line and exit with `outcome.STOP_EXIT_CODE` (75: stopped on request,
checkpoint saved; resubmitting resumes). A second Ctrl-C interrupts at once.

The step in progress is finished, not abandoned: a step is one optimizer update and the data and
RNG positions advance with it, so stopping mid-step would need its partial work undone. torchrun
kills workers 30 s after forwarding SIGTERM, which a long step (or its save) can exceed; the
Slurm scripts therefore ask for an early signal to the batch shell, which touches the stop file
minutes before the time limit (`slurm/`).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_uniapl.outcome import STOP_EXIT_CODE, write_status

logger = logging.getLogger(__name__)

STOP_FILE_ENV = "UNIAPL_STOP_FILE"
"""Environment variable naming a file whose existence asks the run to stop."""


class StopRequested(Exception):
    """The run stopped on request; `message` is the one line to print."""


class StopRequest:
    """Catches stop signals while installed (a context manager) and answers `agreed()`."""

    def __init__(self, stop_file: str | None = None):
        self.stop_file = Path(stop_file) if stop_file else (
            Path(os.environ[STOP_FILE_ENV]) if os.environ.get(STOP_FILE_ENV) else None)
        self.received: str | None = None
        self.stopping = False
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # After a stop the process is on its way out with status 75: a launcher's SIGTERM
            # to the ranks still shutting down (torchrun sends one when the first rank exits)
            # must not turn their clean exit into a kill.
            signal.signal(sig, signal.SIG_IGN if self.stopping else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
        if self.received is None:
            self.received = name
            logger.warning("%s received: the run stops after the current step and saves a checkpoint "
                           "(Ctrl-C again to interrupt at once)", name)

    def local_reason(self) -> str | None:
        """Why this rank wants to stop, or None."""
        if self.received is not None:
            return self.received
        if self.stop_file is not None and self.stop_file.exists():
            return f"stop file {self.stop_file}"
        return None

    def agreed(self) -> str | None:
        """Collective: the reason to stop when any rank wants to (the same answer on all ranks)."""
        reason = self.local_reason()
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return reason
        flag = torch.tensor([1.0 if reason else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() == 0.0:
            return None
        return reason or "a stop request on another rank"


def stop_if_requested(request: StopRequest, rt, saved_at: int, save) -> None:
    """Collective, at a step boundary: when any rank asks to stop, save (unless the step is
    already saved or non-finite) and raise StopRequested with the line to print."""
    reason = request.agreed()
    if reason is None:
        return
    from megatron_uniapl.checkpoint import latest_checkpoint

    if rt.step > saved_at and not rt.loop.in_streak:
        what = f"saved checkpoint {save(rt).name}"
    elif rt.loop.in_streak:
        what = "no checkpoint saved (the last steps were non-finite); a resume repeats them from the newest one"
    elif rt.step == 0:
        what = "no step had run, nothing to save"
    else:
        what = f"step {rt.step} was already saved"
    message = (f"stopped on request ({reason}) at step {rt.step} of {rt.config.train.steps}: {what}; "
               f"run the same command again to resume")
    request.stopping = True
    newest = latest_checkpoint(rt.config.checkpoint_dir)
    write_status(rt.config.logging.run_dir, "stopped", STOP_EXIT_CODE, rt.step, newest.name if newest else None,
                 message)
    raise StopRequested(message)
