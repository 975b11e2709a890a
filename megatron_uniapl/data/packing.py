"""Pack demonstrations and rollouts into token-budgeted micro-batches, balanced over data-parallel ranks.

Layout of one micro-batch: ONE row (batch size 1) holding its samples back to back, T tokens:

    input_ids     [1, T]  prompt + response of each sample, concatenated
    position_ids  [1, T]  restart at 0 at every sample (and at the padding tail)
    cu_seqlens    [n+1]   int32 segment boundaries, 0 ... T; the padding tail (if any) is its own
                          segment, so variable-length attention never lets a sample see another
    targets       [1, T]  next-token ids (the shift convention below)
    sft_mask      [1, T]  1 where the target is a counted response token of a demonstration
    rollout_mask  [1, T]  1 where the target is a counted response token of a rollout
    kind          [1, T]  int8 per position: 0 padding, 1 demo, 2 rollout
    advantages    {signal: [1, T]} the sample's advantage on its rollout_mask positions, else 0
    rollout_logprobs [1, T] engine log-prob of the target token on rollout positions, else 0

Shift convention (next-token prediction, no cross-sample targets): in a sample x_0..x_{L-1} with
P prompt tokens, position p holds input x_p and target x_{p+1}; the last position of a sample has
target `pad_token_id` and every mask 0. Response token j (= x_{P+j}) is therefore predicted at
position P + j - 1, where its loss mask, advantage and rollout log-prob are placed. So
`logprobs_from_logits(model(input_ids), targets)` lines up with every per-token tensor here.

Placement: samples are first dealt to ranks, longest first, each to the rank with the fewest tokens
so far (ranks then differ by at most one sample's length); each rank's samples are packed
first-fit-decreasing into micro-batches of at most `max_tokens_per_micro_batch` tokens; ranks with
fewer micro-batches split their fullest ones until every rank has the same number M (Megatron's
pipeline schedule runs the same number of micro-batches on every rank). Only when a rank has fewer
samples than M does it get an empty (all-padding, all-mask-0) micro-batch.

Padding bound: with `pad_to_multiple_of = m` a micro-batch holds fewer than m padding tokens, and
an empty one exactly m; with m = 1 (default) nothing is padded.

`PackedBatch.num_sft_tokens` / `num_rollout_tokens` are the GLOBAL loss-token counts that the
reduction contract (`megatron_uniapl.losses.reduction`) needs before the first forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.uniapl import term_token_counts

KIND_CODES = {SampleKind.DEMO: 1, SampleKind.ROLLOUT: 2}
"""Value of the `kind` tensor per sample kind (0 is padding)."""


@dataclass
class PackedMicroBatch:
    """One micro-batch in the packed layout (see the module docstring for every field's shape)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    targets: torch.Tensor
    sft_mask: torch.Tensor
    rollout_mask: torch.Tensor
    kind: torch.Tensor
    advantages: dict[str, torch.Tensor]
    rollout_logprobs: torch.Tensor | None
    sample_indices: list[int]
    """Indices into the packed sample list, in row order."""
    num_real_tokens: int
    """Tokens that belong to samples (T minus padding)."""
    old_logprobs: torch.Tensor | None = None
    """[1, T] pi_old log-probs of the targets; filled by the trainer before the update."""

    def loss_inputs(self) -> dict:
        """The keyword tensors `megatron_uniapl.losses.uniapl.uniapl_loss` takes from a batch."""
        return dict(
            sft_mask=self.sft_mask,
            rollout_mask=self.rollout_mask,
            advantages=self.advantages,
            old_logprobs=self.old_logprobs,
            rollout_logprobs=self.rollout_logprobs,
        )


@dataclass
class PackedBatch:
    """A global batch: `micro_batches[rank][i]`, the same count per rank, and its token counts."""

    micro_batches: list[list[PackedMicroBatch]]
    num_sft_tokens: int
    """Loss tokens of all demonstrations in the global batch."""
    num_rollout_tokens: int
    """Loss tokens of all rollouts in the global batch."""
    advantage_keys: list[str] = field(default_factory=list)

    def term_counts(self) -> dict[str, int]:
        """N_k per loss term, as `uniapl_loss(global_counts=...)` expects."""
        return term_token_counts(self.num_sft_tokens, self.num_rollout_tokens)


def _loss_tokens(sample: Sample) -> int:
    return (
        len(sample.response_ids) if sample.loss_mask is None else int(sum(1 for m in sample.loss_mask if m))
    )


def _deal_to_ranks(lengths: Sequence[int], dp_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    loads = [0] * dp_size
    ranks: list[list[int]] = [[] for _ in range(dp_size)]
    for i in order:
        r = min(range(dp_size), key=lambda k: (loads[k], k))
        ranks[r].append(i)
        loads[r] += lengths[i]
    return ranks


def _first_fit_decreasing(indices: list[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    bins: list[list[int]] = []
    loads: list[int] = []
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        for b, load in enumerate(loads):
            if load + lengths[i] <= budget:
                bins[b].append(i)
                loads[b] += lengths[i]
                break
        else:
            bins.append([i])
            loads.append(lengths[i])
    return bins


def _split_to(bins: list[list[int]], lengths: Sequence[int], count: int) -> list[list[int]]:
    """Split the fullest multi-sample bins (halves balanced by tokens) until there are `count`."""
    bins = [list(b) for b in bins]
    while len(bins) < count:
        splittable = [b for b in bins if len(b) > 1]
        if not splittable:
            bins.extend([] for _ in range(count - len(bins)))
            break
        victim = max(splittable, key=lambda b: (sum(lengths[i] for i in b), len(b)))
        bins.remove(victim)
        halves: list[list[int]] = [[], []]
        for i in sorted(victim, key=lambda i: (-lengths[i], i)):
            halves[min((0, 1), key=lambda h: sum(lengths[j] for j in halves[h]))].append(i)
        bins.extend(halves)
    return bins


def _build_micro_batch(
    samples: Sequence[Sample], indices: list[int], keys: list[str], pad_to_multiple_of: int, pad_token_id: int
) -> PackedMicroBatch:
    order = sorted(indices)
    real = sum(samples[i].num_tokens for i in order)
    pad = (-real) % pad_to_multiple_of if real else pad_to_multiple_of
    total = real + pad
    input_ids = torch.full((total,), pad_token_id, dtype=torch.long)
    targets = torch.full((total,), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(total, dtype=torch.long)
    sft_mask = torch.zeros(total)
    rollout_mask = torch.zeros(total)
    kind = torch.zeros(total, dtype=torch.int8)
    advantages = {k: torch.zeros(total) for k in keys}
    has_rlp = any(samples[i].rollout_logprobs is not None for i in order)
    rollout_logprobs = torch.zeros(total) if has_rlp else None
    cu = [0]
    for i in order:
        s = samples[i]
        p, r = len(s.prompt_ids), len(s.response_ids)
        start, n = cu[-1], p + r
        seq = torch.tensor(list(s.prompt_ids) + list(s.response_ids), dtype=torch.long)
        input_ids[start : start + n] = seq
        targets[start : start + n - 1] = seq[1:]
        position_ids[start : start + n] = torch.arange(n)
        kind[start : start + n] = KIND_CODES[s.kind]
        # Response token j is predicted at position p + j - 1 (see the shift convention).
        predicted = slice(start + p - 1, start + p - 1 + r)
        mask = torch.ones(r) if s.loss_mask is None else torch.tensor(s.loss_mask, dtype=torch.float32)
        if s.kind == SampleKind.ROLLOUT:
            rollout_mask[predicted] = mask
            for k in keys:
                advantages[k][predicted] = float(s.advantages[k]) * mask
            if s.rollout_logprobs is not None:
                rollout_logprobs[predicted] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
        else:
            sft_mask[predicted] = mask
        cu.append(start + n)
    if pad:
        position_ids[real:] = torch.arange(pad)
        cu.append(total)
    return PackedMicroBatch(
        input_ids=input_ids.unsqueeze(0),
        position_ids=position_ids.unsqueeze(0),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        targets=targets.unsqueeze(0),
        sft_mask=sft_mask.unsqueeze(0),
        rollout_mask=rollout_mask.unsqueeze(0),
        kind=kind.unsqueeze(0),
        advantages={k: v.unsqueeze(0) for k, v in advantages.items()},
        rollout_logprobs=None if rollout_logprobs is None else rollout_logprobs.unsqueeze(0),
        sample_indices=order,
        num_real_tokens=real,
    )


def pack_samples(
    samples: Sequence[Sample],
    max_tokens_per_micro_batch: int,
    dp_size: int = 1,
    pad_to_multiple_of: int = 1,
    pad_token_id: int = 0,
) -> PackedBatch:
    """Pack a global batch of `samples` (demos and rollouts) for `dp_size` data-parallel ranks.

    Deterministic: every rank can call it on the same global batch and take `micro_batches[rank]`.
    Raises ValueError for a sample longer than the budget, one with an empty prompt (its first
    response token would have no position to be predicted from), rollouts whose advantage
    signals disagree, or engine log-probs on some rollouts but not all.
    """
    if max_tokens_per_micro_batch <= 0 or dp_size <= 0 or pad_to_multiple_of <= 0:
        raise ValueError("max_tokens_per_micro_batch, dp_size and pad_to_multiple_of must be > 0")
    if max_tokens_per_micro_batch % pad_to_multiple_of:
        raise ValueError(
            f"max_tokens_per_micro_batch ({max_tokens_per_micro_batch}) must be a multiple of "
            f"pad_to_multiple_of ({pad_to_multiple_of}) so padding never breaks the budget"
        )
    lengths = [s.num_tokens for s in samples]
    for i, s in enumerate(samples):
        if lengths[i] > max_tokens_per_micro_batch:
            raise ValueError(
                f"sample {i} has {lengths[i]} tokens, over "
                f"max_tokens_per_micro_batch={max_tokens_per_micro_batch}"
            )
        if not s.prompt_ids:
            raise ValueError(
                f"sample {i} has an empty prompt; the packed layout needs at least one prompt token"
            )
    rollouts = [i for i, s in enumerate(samples) if s.kind == SampleKind.ROLLOUT]
    keys = sorted(samples[rollouts[0]].advantages) if rollouts else []
    for i in rollouts:
        if sorted(samples[i].advantages) != keys:
            raise ValueError(
                f"rollout sample {i} has advantages {sorted(samples[i].advantages)}, "
                f"sample {rollouts[0]} has {keys}"
            )

    with_logprobs = [i for i in rollouts if samples[i].rollout_logprobs is not None]
    if with_logprobs and len(with_logprobs) != len(rollouts):
        missing = sorted(set(rollouts) - set(with_logprobs))
        raise ValueError(
            f"rollout samples {missing[:10]} have no rollout_logprobs but sample {with_logprobs[0]} has; "
            f"a batch has engine log-probs for every rollout or for none"
        )

    per_rank = [
        _first_fit_decreasing(r, lengths, max_tokens_per_micro_batch)
        for r in _deal_to_ranks(lengths, dp_size)
    ]
    count = max(1, max(len(b) for b in per_rank))
    per_rank = [_split_to(b, lengths, count) for b in per_rank]
    micro_batches = [
        [_build_micro_batch(samples, b, keys, pad_to_multiple_of, pad_token_id) for b in bins]
        for bins in per_rank
    ]
    n_sft = sum(_loss_tokens(s) for s in samples if s.kind == SampleKind.DEMO)
    n_roll = sum(_loss_tokens(s) for s in samples if s.kind == SampleKind.ROLLOUT)
    return PackedBatch(micro_batches, n_sft, n_roll, keys)
