"""Bucketing, accounting and verification of the engine side of weight sync (no engine needed).

The receiver here only records calls: what is checked is the bucketing and the begin/finish
protocol, not loading (that is tests/test_vllm_engine.py).
"""

from __future__ import annotations

import pytest
import torch

from megatron_uniapl.rollout.weight_sync import (
    WeightSyncMismatchError,
    bucketize,
    compare_logprobs,
    push_weights,
    verify_sync,
)


def named(sizes):
    """float32 tensors of the given element counts: 4 bytes each element."""
    return [(f"t{i}", torch.zeros(n)) for i, n in enumerate(sizes)]


def test_bucketize_packs_in_order_and_bounds_size():
    buckets = list(bucketize(iter(named([10, 10, 5, 30, 1, 1])), bucket_bytes=100))
    # 40+40 fit (80); +20 would be 100 <= 100 fits; 120 bytes alone; then 4+4
    assert [[name for name, _ in b] for b in buckets] == [["t0", "t1", "t2"], ["t3"], ["t4", "t5"]]


def test_bucketize_is_lazy():
    consumed = []

    def stream():
        for name, t in named([10, 10, 10]):
            consumed.append(name)
            yield name, t

    first = next(bucketize(stream(), bucket_bytes=40))
    assert [n for n, _ in first] == ["t0"] and consumed == ["t0", "t1"]
    with pytest.raises(ValueError, match="bucket_bytes"):
        next(bucketize(iter([]), 0))


class Recorder:
    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def begin_weight_update(self):
        self.calls.append("begin")

    def load_weight_bucket(self, bucket):
        if self.fail_on in [n for n, _ in bucket]:
            raise ValueError(f"bad {self.fail_on}")
        self.calls.append([n for n, _ in bucket])

    def finish_weight_update(self, version):
        self.calls.append(("finish", version))


def test_push_counts_bytes_and_buckets():
    rec = Recorder()
    stats = push_weights(rec, named([10, 10, 5, 30]), version=3, bucket_bytes=100)
    assert rec.calls == ["begin", ["t0", "t1", "t2"], ["t3"], ("finish", 3)]
    assert (stats.num_tensors, stats.num_bytes, stats.num_buckets, stats.max_bucket_bytes) == (4, 220, 2, 120)
    assert stats.gb_per_s == pytest.approx(220 / stats.seconds / 1e9)
    assert stats.metrics()["weight_sync/gb"] == pytest.approx(2.2e-7)


def test_push_closes_an_aborted_update():
    rec = Recorder(fail_on="t3")
    with pytest.raises(ValueError, match="bad t3"):
        push_weights(rec, named([10, 10, 5, 30]), version=3, bucket_bytes=100)
    assert rec.calls == ["begin", ["t0", "t1", "t2"], ("finish", None)]


def test_compare_and_verify():
    check = compare_logprobs([[-1.0, -2.0], [-3.0]], [[-1.5, -2.0], [-2.75]])
    assert (check.max_abs_diff, check.mean_abs_diff, check.num_tokens) == (0.5, 0.25, 3)
    with pytest.raises(ValueError, match="sequence 1: engine gave 1 log-probs, the reference 2"):
        compare_logprobs([[-1.0], [-1.0]], [[-1.0], [-1.0, -2.0]])

    class Scorer:
        def score(self, sequences, prompt_lens):
            return [[-1.0] * (len(s) - p) for s, p in zip(sequences, prompt_lens)]

    ref = lambda seqs, plens: [[-1.0 + 1e-6] * (len(s) - p) for s, p in zip(seqs, plens)]  # noqa: E731
    assert verify_sync(Scorer(), [[1, 2, 3]], [1], ref, tolerance=1e-4).num_tokens == 2
    far = lambda seqs, plens: [[-1.2] * (len(s) - p) for s, p in zip(seqs, plens)]  # noqa: E731
    with pytest.raises(WeightSyncMismatchError, match="up to 0.2"):
        verify_sync(Scorer(), [[1, 2, 3]], [1], far, tolerance=1e-4)
