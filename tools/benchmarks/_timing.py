"""The one timing rule every benchmark uses: warm-ups, then the median of timed repeats, with the
GPU synchronized before and after each repeat so queued kernels are neither missed nor billed to
the next repeat."""

from __future__ import annotations

import statistics
import time

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, warmup: int = 0) -> float:
    """Median wall time of `fn()` over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
