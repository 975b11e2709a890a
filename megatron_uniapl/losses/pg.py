"""Policy-gradient terms on rollout tokens: the GRPO clipped surrogate (with TIS) and the KL penalty.

Three log-probs of the same sampled token appear here, all `log pi(token | prefix)`:
  - `logprobs`          the trainer's current policy pi_theta (carries the gradient);
  - `old_logprobs`      the trainer's policy that the advantages were computed for, pi_old,
                        recomputed by the trainer before the first update of the step (equal to
                        `logprobs` in value when there is one optimizer step per rollout batch);
  - `rollout_logprobs`  what the rollout engine reported while sampling. The engine and the trainer
                        never agree exactly (kernels, precision), so the tokens were drawn from
                        pi_rollout, not pi_old.

Per masked token, with rho = exp(logprobs - old_logprobs):

    surrogate = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A)
    loss      = w * surrogate,  w = stopgrad(min(exp(old_logprobs - rollout_logprobs), tis_cap))

`w` is truncated importance sampling (TIS): it reweights tokens that pi_old would have sampled
more often than the engine did, truncated at `tis_cap` to bound the variance; it is detached so
it only reweights and never becomes a gradient path. It is off when `tis_cap` is None.

Reduction: every function returns a `LossTerm` (sums over the mask; see `reduction`).
"""

from __future__ import annotations

import torch

from megatron_uniapl.config.objective import KL_ESTIMATORS
from megatron_uniapl.losses.reduction import (
    LossTerm,
    masked_log_ratio,
    masked_sum,
    masked_term,
)


def clipped_surrogate_term(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    rollout_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
    entropy: torch.Tensor | None = None,
) -> LossTerm:
    """GRPO's clipped surrogate summed over one micro-batch's rollout tokens.

    All tensors have the same shape [...] (e.g. [1, T] packed); `advantages` holds each token's
    sample advantage (broadcast over its response tokens). `old_logprobs=None` means strictly
    on-policy (rho == 1 in value, gradient -A * grad log pi). `rollout_logprobs` is needed only
    when `tis_cap` is set.

    Metric sums (divide by the global token count): `clip_frac` (tokens whose clipped branch is
    active), `clip_frac_low`, `clip_frac_high`, `ratio` (rho), `approx_kl` (k3 estimate of
    KL(pi_old || pi_theta): rho - 1 - log rho), `advantage`, and with TIS `tis_weight`,
    `tis_capped_frac`, `rollout_mismatch_kl` (k3 estimate of KL(pi_rollout || pi_old)); `entropy`
    when given.
    """
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    log_ratio = masked_log_ratio(logprobs, old_logprobs.detach(), mask)
    ratio = torch.exp(log_ratio)
    # Zero off the mask too: a NaN advantage there would turn the zero upstream gradient into NaN.
    adv = torch.where(mask.bool(), advantages.to(ratio.dtype), torch.zeros((), dtype=ratio.dtype))
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)

    low_active = (ratio < 1.0 - clip_low) & (adv < 0)
    high_active = (ratio > 1.0 + clip_high) & (adv > 0)
    lr = log_ratio.detach()
    metrics = {
        "clip_frac": masked_sum((low_active | high_active).to(ratio.dtype), mask),
        "clip_frac_low": masked_sum(low_active.to(ratio.dtype), mask),
        "clip_frac_high": masked_sum(high_active.to(ratio.dtype), mask),
        "ratio": masked_sum(ratio, mask),
        "approx_kl": masked_sum(torch.expm1(lr) - lr, mask),
        "advantage": masked_sum(adv, mask),
    }
    if tis_cap is not None:
        if tis_cap <= 0:
            raise ValueError(f"tis_cap must be > 0, got {tis_cap}")
        if rollout_logprobs is None:
            raise ValueError("TIS is on (tis_cap set) but no rollout_logprobs were given")
        engine_log_ratio = masked_log_ratio(old_logprobs, rollout_logprobs, mask).detach().to(ratio.dtype)
        weight = torch.clamp(torch.exp(engine_log_ratio), max=tis_cap)
        per_token = per_token * weight
        metrics["tis_weight"] = masked_sum(weight, mask)
        metrics["tis_capped_frac"] = masked_sum((torch.exp(engine_log_ratio) > tis_cap).to(ratio.dtype), mask)
        neg = -engine_log_ratio
        metrics["rollout_mismatch_kl"] = masked_sum(torch.expm1(neg) - neg, mask)
    if entropy is not None:
        metrics["entropy"] = masked_sum(entropy, mask)
    return masked_term(per_token, mask, metrics)


def kl_per_token(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k3",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled by the policy.

    With x = ref_logprobs - logprobs (log pi_ref / pi_theta):
      k1 = -x                 unbiased, high variance, can be negative;
      k2 = x^2 / 2            biased, low variance;
      k3 = exp(x) - 1 - x     unbiased and always >= 0: the "low-variance" default.
    As DIFFERENTIATED losses they differ: in expectation k2's gradient is the gradient of
    KL(pi_theta || pi_ref), k3's is the gradient of KL(pi_ref || pi_theta), k1's is zero.
    Shapes: [...] in, [...] out; no reduction.
    """
    x = ref_logprobs.detach() - logprobs
    if mask is not None:  # 0 off the mask, so exp(x) cannot overflow at padding
        x = masked_log_ratio(ref_logprobs.detach(), logprobs, mask)
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x * x
    if estimator == "k3":
        return torch.expm1(x) - x
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


def kl_term(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k3"
) -> LossTerm:
    """The KL penalty summed over one micro-batch's rollout tokens (shapes [...]; see `kl_per_token`)."""
    per_token = kl_per_token(logprobs, ref_logprobs, estimator, mask)
    return masked_term(per_token, mask, {"kl": masked_sum(per_token, mask)})
