"""Pure tensor functions for the UniAPL objective (SFT, policy gradient, KL, composition).

Start at `uniapl.uniapl_loss` (one micro-batch's share of the step objective) and
`reduction` (the one place where normalization is defined). Nothing here knows about Megatron:
log-probs come in through any `logprobs.LogProbFn`.
"""

from megatron_uniapl.losses.logprobs import (
    LogProbFn,
    entropy_from_logits,
    logprobs_from_logits,
)
from megatron_uniapl.losses.reduction import LossTerm, combine_terms
from megatron_uniapl.losses.uniapl import (
    TERM_NAMES,
    term_token_counts,
    uniapl_loss,
    uniapl_terms,
)

__all__ = [
    "TERM_NAMES",
    "LogProbFn",
    "LossTerm",
    "combine_terms",
    "entropy_from_logits",
    "logprobs_from_logits",
    "term_token_counts",
    "uniapl_loss",
    "uniapl_terms",
]
