"""The UniAPL objective on Megatron: packed micro-batches in, the step's loss and metrics out.

This is the thin layer between the pure losses (`megatron_uniapl.losses`) and Megatron's pipeline
schedule (`megatron_uniapl.model.pipeline.run_microbatches`):

1. `megatron_batch` turns one `PackedMicroBatch` (data/packing.py) into the dict the schedule feeds
   every pipeline stage: input ids [1, T], position ids [1, T] and `packed_lengths` (the segment
   lengths, padding tail included, so attention never crosses samples), plus the per-token loss
   inputs that only the last stage reads.
2. `attach_logprobs` runs the micro-batches forward only and stores per-token log-probs of the
   targets under a key: "old_logprobs" (pi_old, the policy before this step's update) or
   "ref_logprobs" (the frozen reference policy, for the KL term).
3. `UniAPLLoss` is the `loss_fn`: vocabulary-parallel log-probs (no vocabulary gather under TP),
   then `losses.uniapl.uniapl_loss` with the GLOBAL per-term token counts.

Rollout temperature: the engine samples rollouts from softmax(z / T), so the policy-gradient terms
need the log-probs of that distribution. On ROLLOUT tokens every log-prob here (the new ones in the
loss, `old_logprobs`, `ref_logprobs`) is log_softmax(z / T); on DEMONSTRATION tokens it stays
log_softmax(z), because the SFT term is the model's own likelihood of the demonstration. The
reference policy is tempered like the policy (the KL term compares the two sampling
distributions), and the logged entropy is that of the distribution each token is scored under
(tempered on rollout tokens, plain on demonstrations). At T = 1 nothing is divided: the code path
is the untempered one (`token_temperature` returns None).

The scale of what one micro-batch returns, and how Megatron-Core is configured not to change
it, is the reduction contract (`megatron_uniapl.losses.reduction`). The count returned beside the
loss (loss tokens of the micro-batch) is bookkeeping only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from megatron_uniapl.config.objective import PolicyGradientConfig, StepWeights
from megatron_uniapl.data.packing import PackedBatch, PackedMicroBatch
from megatron_uniapl.losses.uniapl import LOSS_INPUT_KEYS, uniapl_loss
from megatron_uniapl.losses.vocab_parallel import (
    vocab_parallel_entropy,
    vocab_parallel_logprobs,
)


def _device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def megatron_batch(micro_batch: PackedMicroBatch, device: torch.device | None = None) -> dict:
    """The schedule's view of one packed micro-batch (shapes as in data/packing.py, all [1, T]).

    Keys: input_ids, position_ids, packed_lengths (list[int], sums to T), targets, sft_mask,
    rollout_mask, advantages ({signal: [1, T]}), old_logprobs, rollout_logprobs, ref_logprobs.
    """
    device = device or _device()
    cu = micro_batch.cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:])]
    if sum(lengths) != micro_batch.input_ids.shape[1]:
        raise ValueError(
            f"cu_seqlens end at {cu[-1]} but the row has {micro_batch.input_ids.shape[1]} tokens"
        )

    def put(t):
        return None if t is None else t.to(device)

    rollout_logprobs = micro_batch.rollout_logprobs
    if rollout_logprobs is None and not bool(micro_batch.rollout_mask.any()):
        # Packing adds engine log-probs only to micro-batches holding rollouts; a demo-only one
        # gets zeros, which no masked term ever reads, so TIS works on every micro-batch alike.
        rollout_logprobs = torch.zeros_like(micro_batch.rollout_mask)

    return {
        "input_ids": put(micro_batch.input_ids),
        "position_ids": put(micro_batch.position_ids),
        "packed_lengths": lengths,
        "targets": put(micro_batch.targets),
        "sft_mask": put(micro_batch.sft_mask),
        "rollout_mask": put(micro_batch.rollout_mask),
        "advantages": {k: put(v) for k, v in micro_batch.advantages.items()},
        "old_logprobs": put(micro_batch.old_logprobs),
        "rollout_logprobs": put(rollout_logprobs),
        "ref_logprobs": None,
    }


def rank_batches(packed: PackedBatch, dp_rank: int, device: torch.device | None = None) -> list[dict]:
    """This data-parallel rank's micro-batches of a packed global batch, as `megatron_batch` dicts."""
    if not 0 <= dp_rank < len(packed.micro_batches):
        raise ValueError(
            f"data-parallel rank {dp_rank} but the batch was packed for {len(packed.micro_batches)}"
        )
    return [megatron_batch(mb, device) for mb in packed.micro_batches[dp_rank]]


def token_temperature(batch: dict, rollout_temperature: float) -> torch.Tensor | None:
    """Per-position temperature [1, T] of a micro-batch: `rollout_temperature` on rollout tokens,
    1 elsewhere (demonstrations, prompts, padding); None at temperature 1 (nothing to divide)."""
    if rollout_temperature == 1.0:
        return None
    if rollout_temperature <= 0:
        raise ValueError(f"rollout temperature must be > 0, got {rollout_temperature}")
    rollout = batch["rollout_mask"] > 0
    return torch.where(rollout, rollout_temperature, 1.0).to(torch.float32)


def _logprob_loss_fn(logits: torch.Tensor, batch: dict, rollout_temperature: float = 1.0):
    temperature = token_temperature(batch, rollout_temperature)
    logprobs = vocab_parallel_logprobs(logits, batch["targets"], temperature=temperature)
    return logprobs.sum() * 0.0, torch.tensor(0, dtype=torch.int), {"logprobs": logprobs.detach()}


def compute_logprobs(
    model_chunks: list[torch.nn.Module], batches: Sequence[dict], rollout_temperature: float = 1.0
) -> list[torch.Tensor] | None:
    """Per-token log-probs [1, T] of every micro-batch's targets, forward only, no gradient;
    on rollout tokens at `rollout_temperature` (see the module docstring).

    Returns the list on the last pipeline stage (identical on its tensor-parallel ranks) and None
    on the other stages, which never compute a loss. Collective over the model-parallel group.
    """
    from megatron_uniapl.model.pipeline import run_microbatches

    was_training = [c.training for c in model_chunks]
    for c in model_chunks:
        c.eval()
    try:
        with torch.no_grad():
            loss_fn = partial(_logprob_loss_fn, rollout_temperature=rollout_temperature)
            out = run_microbatches(model_chunks, list(batches), loss_fn=loss_fn, forward_only=True)
    finally:
        for c, mode in zip(model_chunks, was_training):
            c.train(mode)
    if not out:
        return None
    return [m["logprobs"] for m in out]


def attach_logprobs(
    model_chunks: list[torch.nn.Module],
    batches: Sequence[dict],
    key: str = "old_logprobs",
    rollout_temperature: float = 1.0,
) -> None:
    """Store `compute_logprobs` under `batches[i][key]` ("old_logprobs" or "ref_logprobs"), at
    the rollout temperature the engine sampled with (the same one `UniAPLLoss` is given).

    Old log-probs come from the policy chunks before the update; reference log-probs from the
    frozen reference policy's chunks (same pipeline layout). Both are read on rollout tokens only,
    so micro-batches without rollout tokens are not run and get zeros (never read: every term
    that reads them is masked to rollout tokens). On stages other than the last the batches are
    left unchanged (they never read it).
    """
    if key not in ("old_logprobs", "ref_logprobs"):
        raise ValueError(f"key must be 'old_logprobs' or 'ref_logprobs', got {key!r}")
    # Interleaved pipelines need a micro-batch count that fits their schedule: run them all.
    needed = [b for b in batches if len(model_chunks) > 1 or bool(b["rollout_mask"].any())]
    logprobs = compute_logprobs(model_chunks, needed, rollout_temperature) if needed else []
    if logprobs is None:
        return
    for batch, lp in zip(needed, logprobs):
        batch[key] = lp
    for batch in batches:
        if key not in batch or batch[key] is None:
            batch[key] = torch.zeros_like(batch["rollout_mask"])


@dataclass
class UniAPLLoss:
    """`loss_fn` for `run_microbatches`: this micro-batch's share of the step's UniAPL objective.

    Returns (loss, loss tokens of the micro-batch, metrics); see the module docstring for why
    the loss is already divided by the global counts and nothing else may rescale it. Metrics are
    shares of token means (sum them over micro-batches and data-parallel ranks) plus `loss/total`.
    """

    weights: StepWeights
    """The objective's weights at this optimizer step (`ObjectiveConfig.weights_at`)."""
    pg: PolicyGradientConfig
    """Surrogate, TIS and KL-estimator settings."""
    global_counts: Mapping[str, int]
    """N_k per term over the whole global batch (`PackedBatch.term_counts()`)."""
    with_entropy: bool = True
    """Log the policy entropy on each term's tokens (one extra vocabulary-parallel reduction);
    on rollout tokens the entropy of the tempered distribution the engine samples from."""
    rollout_temperature: float = 1.0
    """The temperature the rollouts were sampled at (`rollout.sampling.temperature`): log-probs
    and entropy on rollout tokens are those of softmax(z / T); demonstration tokens stay at 1."""

    def __call__(self, logits: torch.Tensor, batch: dict):
        temperature = token_temperature(batch, self.rollout_temperature)
        logprobs = vocab_parallel_logprobs(logits, batch["targets"], temperature=temperature)
        entropy = None
        if self.with_entropy:
            with torch.no_grad():
                entropy = vocab_parallel_entropy(logits.detach(), temperature=temperature)
        inputs = {k: batch.get(k) for k in LOSS_INPUT_KEYS}
        loss, metrics = uniapl_loss(
            logprobs,
            weights=self.weights,
            pg=self.pg,
            global_counts=self.global_counts,
            entropy=entropy,
            **inputs,
        )
        metrics["loss/total"] = loss.detach()
        num_tokens = (batch["sft_mask"].sum() + batch["rollout_mask"].sum()).to(torch.int)
        return loss, num_tokens, metrics

