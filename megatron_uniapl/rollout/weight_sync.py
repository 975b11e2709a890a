"""Engine side of weight sync: Hugging Face-named tensors -> the live engine, in bounded buckets.

The trainer gathers its Megatron shards into full Hugging Face-named tensors one at a time (that
part lives with the conversion code). This module groups that stream into buckets of at most
`bucket_bytes` (one tensor larger than a bucket travels alone), so that no more than one bucket
of gathered tensors is alive at once, pushes each bucket into the engine, and measures the
transfer. `verify_sync` then checks the result where it matters: log-probs of fixed token
sequences under the engine against the trainer's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

DEFAULT_BUCKET_BYTES = 512 << 20
"""512 MiB: large enough that per-call overhead is negligible, small enough to fit beside a
co-located trainer's working memory."""


class WeightReceiver(Protocol):
    """An engine that takes a weight update in several buckets (see `VLLMEngine`)."""

    def begin_weight_update(self) -> None: ...

    def load_weight_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> None: ...

    def finish_weight_update(self, version: int | None) -> None:
        """Close the update; `version` None means it was aborted part-way."""
        ...


class WeightSyncMismatchError(RuntimeError):
    """Engine log-probs after a sync differ from the trainer's by more than the tolerance."""


@dataclass
class SyncStats:
    """What one weight push moved and how fast."""

    num_tensors: int
    """Tensors pushed."""
    num_bytes: int
    """Bytes pushed (sum of numel x element size of the tensors as sent)."""
    num_buckets: int
    """Buckets (engine calls) used."""
    max_bucket_bytes: int
    """Largest bucket actually sent: the memory bound of the push."""
    seconds: float
    """Wall time from the first bucket to the engine's confirmation of the last."""

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes)."""
        return self.num_bytes / self.seconds / 1e9 if self.seconds > 0 else float("inf")

    def metrics(self) -> dict[str, float]:
        """Namespaced metrics for the run logger."""
        return {
            "time/weight_sync_s": self.seconds,
            "weight_sync/gb": self.num_bytes / 1e9,
            "weight_sync/gb_per_s": self.gb_per_s,
            "weight_sync/buckets": float(self.num_buckets),
        }


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor's elements (what a copy of it moves)."""
    return tensor.numel() * tensor.element_size()


def bucketize(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group a stream of (name, tensor) into lists of at most `bucket_bytes` bytes, in order.

    A tensor larger than `bucket_bytes` forms a bucket of its own. The input is consumed lazily:
    at most one bucket's tensors are referenced at any time.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor_bytes(tensor)
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor.detach()))
        size += nbytes
    if bucket:
        yield bucket


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def push_weights(
    engine: WeightReceiver,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    version: int,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> SyncStats:
    """Send all of `named_tensors` into `engine` in buckets and record `version` there.

    On any error the update is closed as aborted (the engine then knows whether its weights are
    still the old ones or a mix) and the error propagates.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    return push_buckets(engine, bucketize(named_tensors, bucket_bytes), version)


def push_buckets(
    engine: WeightReceiver, buckets: Iterable[list[tuple[str, torch.Tensor]]], version: int
) -> SyncStats:
    """Send already-formed buckets (e.g. received from another pipeline stage) into `engine`.

    The buckets are consumed lazily, so whatever produces them (gathering, broadcasting) is timed
    as part of the sync. Error handling as in `push_weights`.
    """
    num_tensors = num_bytes = num_buckets = max_bucket = 0
    _synchronize()
    start = time.perf_counter()
    engine.begin_weight_update()
    completed = False
    try:
        for bucket in buckets:
            size = sum(tensor_bytes(t) for _, t in bucket)
            engine.load_weight_bucket(bucket)
            num_tensors += len(bucket)
            num_bytes += size
            num_buckets += 1
            max_bucket = max(max_bucket, size)
            del bucket
        completed = True
    finally:
        engine.finish_weight_update(version if completed else None)
    _synchronize()
    stats = SyncStats(num_tensors, num_bytes, num_buckets, max_bucket, time.perf_counter() - start)
    logger.info(
        "weight sync v%d: %d tensors, %.3f GB in %d buckets, %.3f s (%.2f GB/s)",
        version, num_tensors, num_bytes / 1e9, num_buckets, stats.seconds, stats.gb_per_s,
    )
    return stats


@dataclass
class SyncCheck:
    """Engine vs trainer log-probs on fixed sequences after a sync."""

    max_abs_diff: float
    """Largest |engine - trainer| log-prob over all scored tokens."""
    mean_abs_diff: float
    """Mean |engine - trainer| log-prob over all scored tokens."""
    num_tokens: int
    """Tokens compared."""

    def metrics(self) -> dict[str, float]:
        return {"weight_sync/logprob_max_abs_diff": self.max_abs_diff,
                "weight_sync/logprob_mean_abs_diff": self.mean_abs_diff}


def compare_logprobs(engine_lp: list[list[float]], reference_lp: list[list[float]]) -> SyncCheck:
    """Max and mean absolute difference over all tokens of all sequences (token-weighted mean)."""
    if len(engine_lp) != len(reference_lp):
        raise ValueError(f"engine scored {len(engine_lp)} sequences, the reference {len(reference_lp)}")
    diffs = []
    for index, (ours, theirs) in enumerate(zip(engine_lp, reference_lp)):
        if len(ours) != len(theirs):
            raise ValueError(f"sequence {index}: engine gave {len(ours)} log-probs, the reference {len(theirs)}")
        diffs.append(torch.tensor(ours, dtype=torch.float64) - torch.tensor(theirs, dtype=torch.float64))
    flat = torch.cat(diffs).abs() if diffs else torch.zeros(0, dtype=torch.float64)
    if flat.numel() == 0:
        raise ValueError("no tokens to compare: every sequence is all prompt")
    return SyncCheck(float(flat.max()), float(flat.mean()), int(flat.numel()))


def verify_sync(
    engine,
    sequences: list[list[int]],
    prompt_lens: list[int],
    reference: Callable[[list[list[int]], list[int]], list[list[float]]],
    tolerance: float,
) -> SyncCheck:
    """Score `sequences` with the engine and with `reference` (the trainer); raise above `tolerance`.

    `reference(sequences, prompt_lens)` returns, per sequence, the log-probs of the tokens after
    its prompt, the same contract as `RolloutEngine.score`. Float32 weights agree to ~1e-5;
    bf16 to ~0.1, so the tolerance belongs to the caller.
    """
    check = compare_logprobs(engine.score(sequences, prompt_lens), reference(sequences, prompt_lens))
    if check.max_abs_diff > tolerance:
        raise WeightSyncMismatchError(
            f"after weight sync the engine's log-probs differ from the trainer's by up to "
            f"{check.max_abs_diff:.3g} (mean {check.mean_abs_diff:.3g} over {check.num_tokens} tokens), "
            f"above the tolerance {tolerance:.3g}: the pushed weights are not the trainer's"
        )
    return check
