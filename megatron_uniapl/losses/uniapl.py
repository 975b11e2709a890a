"""The UniAPL objective for one micro-batch: the terms, their weights, one reduction.

    L = mu_t * L_sft + (1 - mu_t) * L_pg(A_task) + lambda_adv * L_pg(A_adv) + beta * KL

Term names and the tokens each is a mean over (its global count N_k, see `reduction`):
    "sft"      demo response tokens     (`sft_mask`)
    "pg_task"  rollout response tokens  (`rollout_mask`), advantages["task"]
    "pg_adv"   rollout response tokens  (`rollout_mask`), advantages["adv"]
    "kl"       rollout response tokens  (`rollout_mask`), against `ref_logprobs`
A term whose weight is 0 at this step is not computed at all (its inputs may then be absent), so
e.g. GRPO needs no demonstrations and SFT needs no rollouts, advantages or old log-probs.

Inputs are per-position tensors of one shape [...] (the packed layout is [1, T]); `logprobs` is
whatever `LogProbFn` produced, so the tensor-parallel log-prob can replace the plain one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

from megatron_uniapl.config.objective import PolicyGradientConfig, StepWeights
from megatron_uniapl.losses.pg import clipped_surrogate_term, kl_term
from megatron_uniapl.losses.reduction import LossTerm, combine_terms
from megatron_uniapl.losses.sft import sft_term

TERM_NAMES = ("sft", "pg_task", "pg_adv", "kl")


def term_token_counts(num_sft_tokens: int, num_rollout_tokens: int) -> dict[str, int]:
    """Global token count N_k of every term, from the global batch's demo and rollout loss tokens."""
    return {
        "sft": num_sft_tokens,
        "pg_task": num_rollout_tokens,
        "pg_adv": num_rollout_tokens,
        "kl": num_rollout_tokens,
    }


def uniapl_terms(
    logprobs: torch.Tensor,
    *,
    weights: StepWeights,
    pg: PolicyGradientConfig,
    sft_mask: torch.Tensor | None = None,
    rollout_mask: torch.Tensor | None = None,
    advantages: Mapping[str, torch.Tensor] | None = None,
    old_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> dict[str, LossTerm]:
    """The `LossTerm` of every term with a non-zero weight at this step (sums; no division).

    Raises ValueError naming the missing input when a weighted term cannot be computed.
    """
    advantages = advantages or {}
    term_w = weights.term_weights()
    terms: dict[str, LossTerm] = {}

    def need(value, what: str, term: str):
        if value is None:
            raise ValueError(
                f"loss term {term!r} has weight {term_w[term]} at this step but {what} was not given"
            )
        return value

    if term_w["sft"] > 0:
        terms["sft"] = sft_term(logprobs, need(sft_mask, "sft_mask", "sft"), entropy)
    for term, key in (("pg_task", "task"), ("pg_adv", "adv")):
        if term_w[term] > 0:
            terms[term] = clipped_surrogate_term(
                logprobs,
                old_logprobs,
                need(advantages.get(key), f"advantages[{key!r}]", term),
                need(rollout_mask, "rollout_mask", term),
                clip_low=pg.clip_low,
                clip_high=pg.clip_high,
                rollout_logprobs=rollout_logprobs,
                tis_cap=pg.tis_cap,
                entropy=entropy,
            )
    if term_w["kl"] > 0:
        terms["kl"] = kl_term(
            logprobs,
            need(ref_logprobs, "ref_logprobs", "kl"),
            need(rollout_mask, "rollout_mask", "kl"),
            pg.kl_estimator,
        )
    return terms


LOSS_INPUT_KEYS: tuple[str, ...] = tuple(
    name for name in inspect.signature(uniapl_terms).parameters if name not in ("logprobs", "weights", "pg", "entropy")
)
"""The per-token inputs `uniapl_terms` reads from a micro-batch (derived from its signature, so the
Megatron glue can never ask for a stale list)."""

def uniapl_loss(
    logprobs: torch.Tensor,
    *,
    weights: StepWeights,
    pg: PolicyGradientConfig,
    global_counts: Mapping[str, int],
    **inputs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of the step objective and its metrics (see `combine_terms`).

    global_counts: term name -> N_k over the whole global batch (`term_token_counts`).
    inputs:        the keyword tensors of `uniapl_terms`.
    Returns (loss, metrics): summing `loss`'s gradients over all micro-batches and data-parallel
    ranks gives the gradient of L for the global batch; metrics are likewise summed, not averaged.
    A step where every weight is 0 returns a zero loss that still depends on `logprobs`, so the
    backward pass runs and every rank does the same collective work.
    """
    terms = uniapl_terms(logprobs, weights=weights, pg=pg, **inputs)
    if not terms:
        return logprobs.sum() * 0.0, {}
    return combine_terms(terms, weights.term_weights(), global_counts)
