"""Megatron's checkpoint writer collects its results through a helper process; keep it alive
through a stop signal.

Megatron-Core's distributed-checkpoint writer (megatron-core 0.19) reports results through a
`multiprocessing` Manager process that it starts at the first save and keeps. Slurm (at a time
limit, or on scancel) and a terminal's Ctrl-C signal every process of the job, so that helper
died with the trainer's first SIGTERM and the very save the stop request asked for failed with
"BrokenPipeError". Here the trainer starts that helper itself before the first save, with
SIGTERM and SIGINT ignored (the trainer decides when to stop) and a watch that ends it when its
parent process is gone, and hands it to Megatron. If Megatron no longer has that hook, nothing
is done (and the fault-injection test, which signals the whole process group, would say so).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger(__name__)

_managers: list = []


def _helper_init() -> None:
    """Runs first in the helper process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def shield_writer_helper() -> None:
    """Start Megatron's result-queue helper process ourselves (once per process)."""
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async
    except ImportError:
        return
    if getattr(filesystem_async, "_results_queue", "absent") is not None:
        return  # already started (by us or Megatron), or this Megatron has no such helper
    import multiprocessing as mp
    from multiprocessing.managers import SyncManager

    manager = SyncManager(ctx=mp.get_context("spawn"))
    start_deaf_to_stop_signals(manager)
    _managers.append(manager)  # lives as long as this process; shut down at exit
    filesystem_async._results_queue = manager.Queue()
    logger.debug("started the checkpoint writer's result helper (pid %s)", manager._process.pid)


def start_deaf_to_stop_signals(manager) -> None:
    """Start a multiprocessing manager whose process ignores SIGTERM and SIGINT from birth.

    The launcher signals the whole process group, and a helper that gets SIGTERM before its
    initializer has run dies and takes the next save with it (a stop request's save failed that
    way under Slurm when the helper was first started by that very save). An ignored disposition
    survives fork and exec (a blocked mask does not: the spawn resets it), so the signals are
    ignored in this process while the child starts, about a second. A stop signal that reaches
    this process in that second is lost: that is why the runtime starts the helper while the run
    starts up, when there is nothing to save yet, and not at the first save."""
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        manager.start(initializer=_helper_init)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
