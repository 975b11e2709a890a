"""torchrun for the Slurm scripts: the node rank from Slurm, and the trainer's "stopped" status kept.

    python -m megatron_uniapl.launcher [torchrun arguments] -m megatron_uniapl.train --config ...

Two things plain torchrun does not do for a job of several nodes:

- The node rank. With a static rendezvous node 0 hosts the store; which node that is must not
  depend on whether a node recognises its own host name. Under srun the rank is Slurm's node index
  (SLURM_NODEID), passed to torchrun as its --node-rank.
- The stop status. The trainer exits 75 after it saved a checkpoint on a stop request; torchrun
  reports any worker's non-zero exit as its own status 1, and srun (--kill-on-bad-exit) would end
  the other nodes' launchers on the first non-zero status anyway. So when the workers ended with 75
  (those torchrun ended with a signal once the first had left aside), this launcher records the
  stop in the file `<UNIAPL_STOP_FILE>.stopped` and exits 0; the batch script reads that file (slurm/common.sh). Without UNIAPL_STOP_FILE it
  exits 75 itself. Any other failure keeps torchrun's behaviour.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

STOPPED_EXIT = 75
"""The trainer's exit status for "stopped on request, checkpoint saved; resubmitting resumes"."""

logger = logging.getLogger("megatron_uniapl.launcher")


def stopped_marker(stop_file: str) -> Path:
    """The file that records a clean stop of this job (next to its stop file)."""
    return Path(f"{stop_file}.stopped")


def stopped_on_request(exit_codes: list[int]) -> bool:
    """Whether the ended workers' exit codes say "stopped on request, checkpoint saved".

    At least one worker exited 75 (it got there after the collective save completed) and none
    failed otherwise; a negative code is a worker torchrun ended with a signal because another
    had exited first (workers leave at slightly different times), not a failure of its own."""
    return STOPPED_EXIT in exit_codes and all(code == STOPPED_EXIT or code < 0 for code in exit_codes)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "SLURM_NODEID" in os.environ:
        os.environ["PET_NODE_RANK"] = os.environ["SLURM_NODEID"]  # torchrun's --node-rank default
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as err:
        codes = [failure.exitcode for failure in err.failures.values()]
        if not stopped_on_request(codes):
            raise
        stop_file = os.environ.get("UNIAPL_STOP_FILE")
        if not stop_file:
            return STOPPED_EXIT
        stopped_marker(stop_file).touch()
        logger.warning("the workers stopped on request with a checkpoint saved (exit %d); recorded in %s",
                       STOPPED_EXIT, stopped_marker(stop_file))
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(record(main)())  # as torchrun: a failure's summary (rank, exit code, traceback) on stderr
