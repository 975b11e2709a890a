"""The reduction contract: how per-micro-batch loss pieces become the gradient of one big batch.

Every loss term in this package returns a `LossTerm` for ONE micro-batch:

    LossTerm(total, count, metrics)
      total   : 0-dim tensor, the SUM of the per-token loss over this micro-batch's masked tokens
                (it carries the autograd graph)
      count   : 0-dim tensor, how many tokens were summed (detached; for logging and checks)
      metrics : name -> 0-dim detached tensor, each a SUM over the same tokens, so that metrics,
                like losses, aggregate exactly by summation over micro-batches and ranks

The step objective is a weighted sum of token means, each over its own tokens of the WHOLE global
batch (all micro-batches of all data-parallel ranks):

    L = sum_k  w_k * (sum over all global tokens of term k) / N_k

where `N_k` is term k's token count in the global batch. `N_k` is known before the first forward
(it is counted from the packed batch, see `megatron_uniapl.data.packing`), so each micro-batch
can contribute `w_k * total_k / N_k` directly and the SUM of the micro-batch gradients over
gradient-accumulation steps and data-parallel ranks is exactly the gradient of `L`. Nothing is
divided by the number of micro-batches or ranks, and nothing downstream may divide again.

How Megatron-Core (0.19.2) is configured to keep this contract (read from its
`pipeline_parallel/schedules.py`, `distributed/distributed_data_parallel.py` and
`distributed/finalize_model_grads.py`): our TransformerConfig sets `calculate_per_token_loss=True`.
Then the schedule does NOT divide the loss a micro-batch returns by `num_microbatches` or by the
token count returned beside it, and DDP uses `gradient_scaling_factor = 1.0` (it SUMS gradients
over data-parallel ranks; `average_in_collective` must stay False). The one place that would still
rescale is `finalize_model_grads(chunks, num_tokens)`, which divides every gradient by the summed
`num_tokens`; the step (`megatron_uniapl.model.distributed.train_step`) calls it with
`num_tokens=None`. So the Megatron loss function (`megatron_uniapl.algorithm.loss.UniAPLLoss`) returns
exactly `combine_terms(...)`'s loss, `sum_k w_k * total_k / N_k`, with no extra factor.

Why not the per-micro-batch mean: a micro-batch with 10 demo tokens would weigh as much as one with
10,000, so the gradient would depend on how samples happened to be packed.

A term with `N_k == 0` (e.g. no demonstrations in this step) contributes exactly zero: its total is
a sum over an empty mask (0.0) and we divide by max(N_k, 1), never by zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class LossTerm:
    """One loss term's contribution from one micro-batch (see the module docstring)."""

    total: torch.Tensor
    """0-dim: sum of the per-token loss over the masked tokens of this micro-batch (with grad)."""
    count: torch.Tensor
    """0-dim: number of tokens summed into `total` (detached)."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached 0-dim token sums over the same tokens; divide by the global count to log means."""


def masked_term(per_token: torch.Tensor, mask: torch.Tensor, metrics: dict | None = None) -> LossTerm:
    """Build a `LossTerm` from a per-token loss and a 0/1 mask of the same shape (any shape).

    Masked-out positions are selected away with `where`, not multiplied, so that a NaN or inf at a
    padding position cannot reach the sum. Their gradient is zero only if the per-token function
    has finite derivatives there; functions that exponentiate (ratios, KL) therefore mask their
    log-ratios first with `masked_log_ratio`.
    """
    if per_token.shape != mask.shape:
        raise ValueError(f"per-token loss shape {tuple(per_token.shape)} != mask shape {tuple(mask.shape)}")
    keep = mask.bool()
    total = torch.where(
        keep, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    ).sum()
    return LossTerm(total=total, count=keep.sum().detach(), metrics=dict(metrics or {}))


def masked_log_ratio(numerator: torch.Tensor, denominator: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`numerator - denominator` on the mask, exactly 0 elsewhere (so exp() stays finite there)."""
    return torch.where(mask.bool(), numerator - denominator, torch.zeros((), dtype=numerator.dtype))


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached sum of `values` over `mask` (for metrics; same masking rule as `masked_term`)."""
    keep = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(keep, values.detach(), zero).sum()


def combine_terms(
    terms: Mapping[str, LossTerm],
    weights: Mapping[str, float],
    global_counts: Mapping[str, int | float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of the step objective: `sum_k w_k * total_k / max(N_k, 1)`.

    terms:         name -> this micro-batch's `LossTerm`.
    weights:       name -> weight `w_k` (>= 0). A term absent from `weights` is an error, so a
                   computed term can never be silently dropped.
    global_counts: name -> `N_k`, the term's token count over the whole global batch.

    Returns (loss, metrics). `loss` is 0-dim with grad; summing its gradient over every
    micro-batch and rank gives the gradient of the step objective. `metrics` holds, per term k,
    `loss/k` (the term's token mean, unweighted) and `k/<metric>` (each metric's token mean), all
    already divided by `N_k`, so they too are summed (not averaged) over micro-batches and ranks.
    """
    loss = None
    metrics: dict[str, torch.Tensor] = {}
    for name, term in terms.items():
        if name not in weights:
            raise KeyError(f"loss term {name!r} has no weight; weights given for {sorted(weights)}")
        if name not in global_counts:
            raise KeyError(
                f"loss term {name!r} has no global token count; counts given for {sorted(global_counts)}"
            )
        n = float(global_counts[name])
        if n < 0:
            raise ValueError(f"global token count of {name!r} is negative ({n})")
        if n == 0 and float(term.count) > 0:
            raise ValueError(
                f"loss term {name!r} has {int(term.count)} tokens in this micro-batch but a global "
                f"count of 0: the global counts do not describe this batch"
            )
        denom = max(n, 1.0)
        contribution = float(weights[name]) * term.total / denom
        loss = contribution if loss is None else loss + contribution
        metrics[f"loss/{name}"] = term.total.detach() / denom
        for key, value in term.metrics.items():
            metrics[f"{name}/{key}"] = value.detach() / denom
    if loss is None:
        raise ValueError("combine_terms needs at least one loss term")
    return loss, metrics
