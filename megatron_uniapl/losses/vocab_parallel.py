"""Token log-probs and entropy from VOCABULARY-PARALLEL logits, without gathering the vocabulary.

Under tensor parallelism Megatron's output layer leaves each of the `tp` ranks with a slice
[..., V/tp] of the logits (rank r holds vocabulary ids [r * V/tp, (r + 1) * V/tp)). Gathering the
full [T, V] row would cost tp x the memory of the shard (Qwen3's vocabulary is 151,936), so both
functions here reduce over the tensor-parallel group with three small all-reduces per position:

    m    = all_reduce_max(max_v z_v)                   the global max, for stability
    S    = all_reduce_sum(sum_v exp(z_v - m))          so lse = m + log S
    z_t  = all_reduce_sum(z_t on the rank that owns t, 0 elsewhere)     (log-probs)
    E[z] = all_reduce_sum(sum_v exp(z_v - lse) z_v)                     (entropy)

    logprob = z_t - lse                 entropy = lse - E[z]

Autograd: each function is a custom `torch.autograd.Function` whose backward is LOCAL to the rank
(no collective), because the gradient with respect to a logit of this rank's slice needs only
global scalars saved in the forward:

    d logprob / d z_v = 1[v = t] - p_v          d entropy / d z_v = -p_v (z_v - E[z])

The upstream gradient is the same on every tensor-parallel rank (the loss is replicated there),
and Megatron's column-parallel output layer all-reduces its input gradient over the group in its
own backward, so the local slice gradient is exactly what it expects (the same contract as
`megatron.core.tensor_parallel.vocab_parallel_cross_entropy`). Megatron's differentiable mappings
(`reduce_from_tensor_model_parallel_region`) are not used for the reductions because they would
all-reduce the gradient a second time in the backward.

The signature matches `losses.logprobs` (a `LogProbFn` with the group bound), so it swaps in; with
a group of one (or none) it computes exactly the TP = 1 values. Everything is float32 inside; the
backward recomputes the softmax from the saved logits instead of keeping a float32 copy.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def default_tp_group():
    """Megatron's tensor-parallel group when its parallel state is initialized, else None."""
    try:
        from megatron.core import parallel_state
    except ImportError:  # pragma: no cover - megatron-core is a dependency
        return None
    if not parallel_state.model_parallel_is_initialized():
        return None
    return parallel_state.get_tensor_model_parallel_group()


def _world(group) -> tuple[int, int]:
    if group is None or not dist.is_initialized():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _all_reduce(t: torch.Tensor, op, group, size: int) -> torch.Tensor:
    if size > 1:
        dist.all_reduce(t, op=op, group=group)
    return t


def _global_lse(shard: torch.Tensor, group, size: int) -> torch.Tensor:
    """log-sum-exp over the full vocabulary of float32 `shard` [..., V/tp] -> [...]."""
    m = _all_reduce(shard.max(dim=-1).values, dist.ReduceOp.MAX, group, size)
    s = _all_reduce(torch.exp(shard - m.unsqueeze(-1)).sum(dim=-1), dist.ReduceOp.SUM, group, size)
    return m + torch.log(s)


class _VocabParallelLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, group) -> torch.Tensor:
        size, rank = _world(group)
        shard = logits.float()
        v_local = shard.shape[-1]
        start = rank * v_local
        local_t = targets.long() - start
        owned = (local_t >= 0) & (local_t < v_local)
        safe_t = torch.where(owned, local_t, torch.zeros_like(local_t))
        picked = shard.gather(-1, safe_t.unsqueeze(-1)).squeeze(-1)
        picked = torch.where(owned, picked, torch.zeros_like(picked))
        picked = _all_reduce(picked, dist.ReduceOp.SUM, group, size)
        lse = _global_lse(shard, group, size)
        ctx.save_for_backward(logits, safe_t, owned, lse)
        return picked - lse

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, safe_t, owned, lse = ctx.saved_tensors
        g = grad_out.float()
        grad = -torch.exp(logits.float() - lse.unsqueeze(-1)) * g.unsqueeze(-1)
        grad.scatter_add_(-1, safe_t.unsqueeze(-1), (g * owned.float()).unsqueeze(-1))
        return grad.to(logits.dtype), None, None


class _VocabParallelEntropy(torch.autograd.Function):
    # Works on z - m (m the global max): with raw logits of size ~10 the two terms of
    # lse - E[z] would cancel and lose digits of float32.
    @staticmethod
    def forward(ctx, logits: torch.Tensor, group) -> torch.Tensor:
        size, _ = _world(group)
        shard = logits.float()
        m = _all_reduce(shard.max(dim=-1).values, dist.ReduceOp.MAX, group, size)
        shifted = shard - m.unsqueeze(-1)
        lse = torch.log(_all_reduce(torch.exp(shifted).sum(dim=-1), dist.ReduceOp.SUM, group, size))
        probs = torch.exp(shifted - lse.unsqueeze(-1))
        mean_z = _all_reduce((probs * shifted).sum(dim=-1), dist.ReduceOp.SUM, group, size)
        ctx.save_for_backward(logits, m, lse, mean_z)
        return lse - mean_z

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, m, lse, mean_z = ctx.saved_tensors
        shifted = logits.float() - m.unsqueeze(-1)
        probs = torch.exp(shifted - lse.unsqueeze(-1))
        grad = -probs * (shifted - mean_z.unsqueeze(-1)) * grad_out.float().unsqueeze(-1)
        return grad.to(logits.dtype), None


def vocab_parallel_logprobs(logits: torch.Tensor, targets: torch.Tensor, group="default") -> torch.Tensor:
    """log softmax(z)[target] per position, z split over the vocabulary across `group`.

    logits:  [..., V/tp] this rank's vocabulary slice (rank r owns ids [r V/tp, (r+1) V/tp)).
    targets: [...] global token ids in [0, V), identical on every rank of the group.
    group:   the tensor-parallel process group; "default" = Megatron's (None if uninitialized),
             None = no communication (the slice is the whole vocabulary).
    Returns [...] float32, identical on every rank of the group. No reduction. Collective: every
    rank of the group must call it with the same shapes.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    if isinstance(group, str):
        group = default_tp_group()
    return _VocabParallelLogProbs.apply(logits, targets, group)


def vocab_parallel_entropy(logits: torch.Tensor, group="default") -> torch.Tensor:
    """Entropy (nats) of softmax(z) per position, z split over the vocabulary across `group`.

    logits: [..., V/tp]; group as in `vocab_parallel_logprobs`. Returns [...] float32,
    identical on every rank of the group. No reduction. Collective.
    """
    if isinstance(group, str):
        group = default_tp_group()
    return _VocabParallelEntropy.apply(logits, group)
