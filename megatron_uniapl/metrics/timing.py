"""Where a step's wall time went: one `time/<phase>_s` per phase, and `time/other_s` for the rest.

The phases a step labels do not overlap (the co-location round's offload, wake, sync, generate,
sleep and onload; the loop's data, reward, discriminator, log-prob, training and checkpoint
phases), so `time/step_s` = the sum of every `time/<phase>_s` + `time/other_s`. Whatever no
phase covers (packing, advantages, the engines' generations gathered to every rank) is `other`.
The step's time runs from its start to its metrics, plus its checkpoint save when it saves one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

import torch

STEP_KEY = "time/step_s"
OTHER_KEY = "time/other_s"
CHECKPOINT_KEY = "time/checkpoint_s"


def phase_key(name: str) -> str:
    """The metric name of phase `name`."""
    return f"time/{name}_s"


@contextmanager
def timed(times: MutableMapping[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to `times[time/<name>_s]`. On a GPU the device is
    synchronized at the end: kernels are asynchronous, and unsynchronized their time would be
    counted in whichever later phase first waits for them."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        key = phase_key(name)
        times[key] = times.get(key, 0.0) + time.perf_counter() - start


def phase_seconds(metrics: Mapping[str, float]) -> float:
    """The sum of the labelled phases in `metrics` (every time/*_s but the step and other)."""
    return sum(v for k, v in metrics.items()
               if k.startswith("time/") and k.endswith("_s") and k not in (STEP_KEY, OTHER_KEY))


def with_other_time(metrics: Mapping[str, float], step_s: float) -> dict[str, float]:
    """`metrics` plus `time/step_s` and `time/other_s` = step_s minus the labelled phases."""
    return {**metrics, STEP_KEY: step_s, OTHER_KEY: step_s - phase_seconds(metrics)}


def with_checkpoint_time(metrics: Mapping[str, float], seconds: float) -> dict[str, float]:
    """A step row whose step went on to save a checkpoint: the save is one more phase, so it
    is added to `time/step_s` as well and `time/other_s` is unchanged."""
    return {**metrics, CHECKPOINT_KEY: seconds, STEP_KEY: metrics[STEP_KEY] + seconds}
