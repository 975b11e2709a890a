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

Temperature: both functions take an optional per-position temperature tau (a float or a tensor of
the targets' shape) and then work on z / tau, the distribution a sampler at temperature tau draws
from. The chain rule only multiplies the local slice gradient by 1 / tau, so the backward stays
local. tau = None (the default) is the untempered path itself, with no division at all.
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


def _inverse(temperature, like: torch.Tensor):
    """1 / temperature as a float or a float32 tensor [...] on `like`'s device; None stays None."""
    if temperature is None:
        return None
    if isinstance(temperature, torch.Tensor):
        # Not checked for > 0 here: that would sync the device on every micro-batch; the caller
        # builds the tensor from a validated temperature.
        return 1.0 / temperature.to(device=like.device, dtype=torch.float32)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return 1.0 / float(temperature)


def _scaled(logits: torch.Tensor, inv) -> torch.Tensor:
    """float32 z * (1 / tau) per position; exactly `logits.float()` when there is no temperature."""
    shard = logits.float()
    if inv is None:
        return shard
    if isinstance(inv, torch.Tensor):
        inv = inv.unsqueeze(-1)
    # Out of place: `float()` returns float32 logits themselves, which autograd still needs.
    return shard * inv


def _times(grad: torch.Tensor, inv) -> torch.Tensor:
    """The chain rule of z -> z / tau: the slice gradient times 1 / tau per position."""
    if inv is None:
        return grad
    return grad * (inv.unsqueeze(-1) if isinstance(inv, torch.Tensor) else inv)


def _global_lse(shard: torch.Tensor, group, size: int) -> torch.Tensor:
    """log-sum-exp over the full vocabulary of float32 `shard` [..., V/tp] -> [...]."""
    m = _all_reduce(shard.max(dim=-1).values, dist.ReduceOp.MAX, group, size)
    s = _all_reduce(torch.exp(shard - m.unsqueeze(-1)).sum(dim=-1), dist.ReduceOp.SUM, group, size)
    return m + torch.log(s)


class _VocabParallelLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, group, inv) -> torch.Tensor:
        size, rank = _world(group)
        shard = _scaled(logits, inv)
        v_local = shard.shape[-1]
        start = rank * v_local
        local_t = targets.long() - start
        owned = (local_t >= 0) & (local_t < v_local)
        safe_t = torch.where(owned, local_t, torch.zeros_like(local_t))
        picked = shard.gather(-1, safe_t.unsqueeze(-1)).squeeze(-1)
        picked = torch.where(owned, picked, torch.zeros_like(picked))
        picked = _all_reduce(picked, dist.ReduceOp.SUM, group, size)
        lse = _global_lse(shard, group, size)
        ctx.inv = inv
        ctx.save_for_backward(logits, safe_t, owned, lse)
        return picked - lse

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, safe_t, owned, lse = ctx.saved_tensors
        g = grad_out.float()
        grad = -torch.exp(_scaled(logits, ctx.inv) - lse.unsqueeze(-1)) * g.unsqueeze(-1)
        grad.scatter_add_(-1, safe_t.unsqueeze(-1), (g * owned.float()).unsqueeze(-1))
        return _times(grad, ctx.inv).to(logits.dtype), None, None, None


class _VocabParallelEntropy(torch.autograd.Function):
    # Works on z - m (m the global max): with raw logits of size ~10 the two terms of
    # lse - E[z] would cancel and lose digits of float32.
    @staticmethod
    def forward(ctx, logits: torch.Tensor, group, inv) -> torch.Tensor:
        size, _ = _world(group)
        shard = _scaled(logits, inv)
        m = _all_reduce(shard.max(dim=-1).values, dist.ReduceOp.MAX, group, size)
        shifted = shard - m.unsqueeze(-1)
        lse = torch.log(_all_reduce(torch.exp(shifted).sum(dim=-1), dist.ReduceOp.SUM, group, size))
        probs = torch.exp(shifted - lse.unsqueeze(-1))
        mean_z = _all_reduce((probs * shifted).sum(dim=-1), dist.ReduceOp.SUM, group, size)
        ctx.inv = inv
        ctx.save_for_backward(logits, m, lse, mean_z)
        return lse - mean_z

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, m, lse, mean_z = ctx.saved_tensors
        shifted = _scaled(logits, ctx.inv) - m.unsqueeze(-1)
        probs = torch.exp(shifted - lse.unsqueeze(-1))
        grad = -probs * (shifted - mean_z.unsqueeze(-1)) * grad_out.float().unsqueeze(-1)
        return _times(grad, ctx.inv).to(logits.dtype), None, None


def vocab_parallel_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, group="default", temperature=None
) -> torch.Tensor:
    """log softmax(z / tau)[target] per position, z split over the vocabulary across `group`.

    logits:  [..., V/tp] this rank's vocabulary slice (rank r owns ids [r V/tp, (r+1) V/tp)).
    targets: [...] global token ids in [0, V), identical on every rank of the group.
    group:   the tensor-parallel process group; "default" = Megatron's (None if uninitialized),
             None = no communication (the slice is the whole vocabulary).
    temperature: tau > 0, a float or a tensor [...] (one per position); None = 1 without dividing.
    Returns [...] float32, identical on every rank of the group. No reduction. Collective: every
    rank of the group must call it with the same shapes.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    _check_temperature_shape(temperature, targets.shape)
    if isinstance(group, str):
        group = default_tp_group()
    return _VocabParallelLogProbs.apply(logits, targets, group, _inverse(temperature, logits))


def vocab_parallel_entropy(logits: torch.Tensor, group="default", temperature=None) -> torch.Tensor:
    """Entropy (nats) of softmax(z / tau) per position, z split over the vocabulary across `group`.

    logits: [..., V/tp]; group and temperature as in `vocab_parallel_logprobs`. Returns [...]
    float32, identical on every rank of the group. No reduction. Collective.
    """
    _check_temperature_shape(temperature, logits.shape[:-1])
    if isinstance(group, str):
        group = default_tp_group()
    return _VocabParallelEntropy.apply(logits, group, _inverse(temperature, logits))


def _check_temperature_shape(temperature, shape: torch.Size) -> None:
    if isinstance(temperature, torch.Tensor) and temperature.shape != shape:
        raise ValueError(f"temperature {tuple(temperature.shape)} must have the positions' shape {tuple(shape)}")
