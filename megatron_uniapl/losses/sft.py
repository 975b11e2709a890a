"""The SFT term: negative log-likelihood of the expert's response tokens.

This is UniAPL's token-level closeness to the expert distribution. It is computed only on the
response tokens of demonstrations (the packed batch's `sft_mask`), never on prompt tokens or on
rollouts. Reduction follows `megatron_uniapl.losses.reduction`: a sum here, the division by the
global demo-token count happens once, in `combine_terms`.
"""

from __future__ import annotations

import torch

from megatron_uniapl.losses.reduction import LossTerm, masked_sum, masked_term


def sft_term(logprobs: torch.Tensor, mask: torch.Tensor, entropy: torch.Tensor | None = None) -> LossTerm:
    """Token NLL summed over the masked tokens of one micro-batch.

    logprobs: [...] log p(target) per position (any layout, e.g. [1, T] packed).
    mask:     [...] 1 on demo response tokens that count, 0 elsewhere.
    entropy:  optional [...] per-position entropy, only for the `entropy` metric.
    Returns LossTerm(total = sum_mask(-logprobs), count = sum(mask)); metric sums: `nll`
    (same as the loss, kept for symmetric logging) and `entropy` when given.
    """
    nll = -logprobs
    metrics = {"nll": masked_sum(nll, mask)}
    if entropy is not None:
        metrics["entropy"] = masked_sum(entropy, mask)
    return masked_term(nll, mask, metrics)
