"""Token log-probabilities and entropy from logits, for an unsharded vocabulary (TP = 1).

The losses never see logits: they take per-token log-probs. Anything that maps
`(logits, targets) -> logprobs` with the signature of `logprobs_from_logits` can therefore be
swapped in (`LogProbFn`), in particular a vocabulary-parallel version for tensor parallelism where
each rank holds a slice of the vocabulary and the log-sum-exp is all-reduced.

Both functions compute in float32 whatever the logits' dtype: bf16 log-softmax over a 150k
vocabulary loses enough precision to move importance ratios by percent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`(logits[..., V], targets[...]) -> logprobs[...]`: the swappable log-prob implementation."""


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position.

    logits:  [..., V] any float dtype (e.g. [b, s, V] for HF layout, [s, b, V] for Megatron's).
    targets: [...] integer token ids in [0, V), same leading shape as `logits`.
    Returns [...] float32: `logits[target] - logsumexp(logits)`, stable for any logit magnitude.
    No reduction.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    logits = logits.float()
    target_logit = torch.gather(logits, -1, targets.long().unsqueeze(-1)).squeeze(-1)
    return target_logit - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position, in nats.

    logits: [..., V]. Returns [...] float32: `logsumexp(z) - sum_v softmax(z)_v * z_v`, which
    equals `-sum p log p` (shift-invariant in z) without ever taking the log of an underflowed
    probability. No reduction.
    """
    # Shifting by the max first keeps both terms small: with raw logits of size ~1000 they would
    # cancel to a difference of ~1 and lose 5 digits of float32.
    logits = logits.float()
    shifted = logits - logits.max(dim=-1, keepdim=True).values.detach()
    probs = torch.softmax(shifted, dim=-1)
    return torch.logsumexp(shifted, dim=-1) - (probs * shifted).sum(dim=-1)
