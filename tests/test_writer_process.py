"""The checkpoint writer's helper process survives a stop signal sent while it starts."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.managers import SyncManager

from megatron_uniapl.checkpoint.writer_process import start_deaf_to_stop_signals


def _signal_as_soon_as_born(manager: SyncManager, signum: int) -> threading.Thread:
    def send() -> None:
        for _ in range(5000):
            process = getattr(manager, "_process", None)
            if process is not None and process.pid:
                os.kill(process.pid, signum)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_helper_started_under_a_stop_signal_lives_and_serves():
    # Started plainly, this SIGTERM kills the child before its initializer runs, and
    # start() fails with EOFError (the stop request's save failed that way under Slurm).
    for signum in (signal.SIGTERM, signal.SIGINT):
        manager = SyncManager(ctx=mp.get_context("spawn"))
        sender = _signal_as_soon_as_born(manager, signum)
        start_deaf_to_stop_signals(manager)
        sender.join()
        try:
            queue = manager.Queue()
            queue.put("result")
            assert queue.get() == "result"
            os.kill(manager._process.pid, signum)  # and after its start, too
            time.sleep(0.2)
            assert manager._process.is_alive()
        finally:
            manager.shutdown()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # this process's handlers restored

