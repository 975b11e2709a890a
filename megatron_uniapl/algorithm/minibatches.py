"""A step's batch split into mini-batches, and several optimizer updates over them.

With one update per rollout batch the policy-gradient ratio pi/pi_old is exactly 1 (pi_old is the
policy being updated), so the clipped surrogate is the plain policy gradient and clipping never
acts. PPO-style training takes several updates per batch: the batch is split into mini-batches,
pi_old is fixed once before the first update, and each update moves the policy further from it,
which is what the clip range and TIS bound.

Reduction: each update is a step of the same objective over ITS mini-batch, every term a token
mean over that mini-batch (`PackedBatch.term_counts()` of its own packing), exactly as a one-update
step is over the whole batch (losses/reduction.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.model.distributed import StepResult


def split_minibatches(samples: Sequence[Sample], n: int) -> list[list[Sample]]:
    """`samples` dealt into `n` mini-batches: demonstrations one by one and rollouts group by
    group (a group's responses stay together), round-robin in their order; each mini-batch
    keeps the batch's order. `n` = 1 returns the batch unchanged. ValueError when a mini-batch
    would be empty."""
    if n < 1:
        raise ValueError(f"the number of mini-batches must be >= 1, got {n}")
    if n == 1:
        return [list(samples)]
    groups: dict[int, int] = {}
    demos = 0
    slot = []  # each sample's place in its kind's order: the demonstration's, or its group's
    for s in samples:
        if s.kind == SampleKind.ROLLOUT:
            slot.append(groups.setdefault(s.group_id, len(groups)))
        else:
            slot.append(demos)
            demos += 1
    if (demos and demos < n) or (groups and len(groups) < n) or not samples:
        raise ValueError(
            f"{demos} demonstrations and {len(groups)} rollout groups cannot fill {n} mini-batches: each "
            f"mini-batch needs at least one of every kind the step trains on (lower train.mini_batches)")
    out: list[list[Sample]] = [[] for _ in range(n)]
    for s, index in zip(samples, slot):
        out[index % n].append(s)
    return out


def combine_updates(results: Sequence[StepResult]) -> StepResult:
    """The step's view of several updates' `StepResult`s: `skipped` if any update was, the
    first update's learning rate, the mean gradient norm over the updates that report one, and
    each loss metric averaged over the updates that have it (a later update's `pg_*/clip_frac`
    and `pg_*/approx_kl` are where clipping shows)."""
    if not results:
        raise ValueError("no updates to combine")
    norms = [r.grad_norm for r in results if r.grad_norm is not None]
    keys = sorted({k for r in results for k in r.metrics})
    metrics = {}
    for k in keys:
        values = [r.metrics[k] for r in results if k in r.metrics]
        metrics[k] = sum(values) / len(values)
    return StepResult(
        skipped=any(r.skipped for r in results),
        grad_norm=sum(norms) / len(norms) if norms else None,
        learning_rate=results[0].learning_rate,
        metrics=metrics,
    )
