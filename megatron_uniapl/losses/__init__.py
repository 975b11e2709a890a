"""Pure tensor functions for the UniAPL objective (SFT, policy gradient, adversarial, composition).

Start at `uniapl.uniapl_loss` (one micro-batch's share of the step objective) and
`reduction` (the one place where normalization is defined). Nothing here knows about Megatron:
log-probs come in through any `logprobs.LogProbFn`.
"""

from megatron_uniapl.losses.config import ObjectiveConfig, PolicyGradientConfig, Stage, StepWeights
from megatron_uniapl.losses.logprobs import LogProbFn, entropy_from_logits, logprobs_from_logits
from megatron_uniapl.losses.logprobs_chunked import logprobs_from_logits_chunked
from megatron_uniapl.losses.reduction import LossTerm, combine_terms
from megatron_uniapl.losses.schedule import MuSchedule
from megatron_uniapl.losses.uniapl import TERM_NAMES, term_token_counts, uniapl_loss, uniapl_terms
from megatron_uniapl.losses.variants import VARIANTS, objective_for_variant

__all__ = [
    "TERM_NAMES",
    "VARIANTS",
    "LogProbFn",
    "LossTerm",
    "MuSchedule",
    "ObjectiveConfig",
    "PolicyGradientConfig",
    "Stage",
    "StepWeights",
    "combine_terms",
    "entropy_from_logits",
    "logprobs_from_logits",
    "logprobs_from_logits_chunked",
    "objective_for_variant",
    "term_token_counts",
    "uniapl_loss",
    "uniapl_terms",
]
