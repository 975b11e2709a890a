"""Did the sync work? Score fixed token sequences with the engine and with the Megatron trainer.

The trainer's log-probs come from Megatron's own forward (`run_microbatches`, forward only, the
pipeline schedule included) and are computed on the vocabulary-parallel logits with the trainer's
own `losses.vocab_parallel.vocab_parallel_logprobs`, so the full-vocabulary logits are never
gathered and the check covers the function that computes the training log-probs. The last pipeline stage broadcasts them to the other stages; every rank then compares
them with its engine's scores, and the verdict is reduced over the model-parallel group so that
all ranks pass or raise together (a rank that raised alone would leave the others hanging in the
next collective).

The check runs at temperature 1 on both sides whatever the rollout temperature: the engine scores
through vLLM's prompt log-probs, which are never tempered, and what is checked is the weights.
`megatron_logprobs(..., temperature=T)` gives the trainer's tempered log-probs, the ones the
engine returns for tokens it sampled at T (with `logprobs_mode="processed_logprobs"`).

Expected agreement: float32 weights on both sides ~1e-5; bf16 ~0.1. The tolerance is the
caller's. Run it every N syncs (`SyncVerifyConfig.every_n_syncs`): it costs one forward of the
check sequences on each side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_uniapl.config.model import token_multiple
from megatron_uniapl.rollout.weight_sync import (
    SyncCheck,
    WeightSyncMismatchError,
    compare_logprobs,
)

logger = logging.getLogger(__name__)


@dataclass
class SyncVerifyConfig:
    """When and how strictly the engine is checked against the trainer after a sync."""

    every_n_syncs: int = 0
    """Verify after every N-th sync (the 1st, N+1-th, ...); 0 never."""
    tolerance: float = 1e-4
    """Largest allowed |engine - trainer| log-prob over all checked tokens (float32: 1e-4;
    bf16 needs ~0.2); `inf` checks only the mean."""
    mean_tolerance: float | None = None
    """Largest allowed mean |engine - trainer| log-prob; None checks only the maximum. The mean
    is the robust statistic in bf16, where single tokens can differ by tenths."""

    def validate(self) -> None:
        if self.every_n_syncs < 0:
            raise ValueError(f"SyncVerifyConfig.every_n_syncs must be >= 0, got {self.every_n_syncs}")
        if self.tolerance <= 0:
            raise ValueError(f"SyncVerifyConfig.tolerance must be positive, got {self.tolerance}")
        if self.mean_tolerance is not None and self.mean_tolerance <= 0:
            raise ValueError(f"SyncVerifyConfig.mean_tolerance must be positive, got {self.mean_tolerance}")


def check_sequences(vocab_size: int, lengths: tuple[int, ...] = (24, 160), seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Random token sequences (the same on every rank) and prompt lengths (half of each).

    The default includes a sequence longer than one KV-cache block (128 tokens on CPU), which
    catches a prefix cache that survived a sync."""
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab_size, (n,), generator=gen).tolist() for n in lengths]
    return seqs, [max(1, n // 2) for n in lengths]


def layout_token_multiple(config) -> int:
    """The sequence-length multiple of a built model's Megatron `TransformerConfig`."""
    recipe = getattr(config, "fp8_recipe", None)
    return token_multiple(config.tensor_model_parallel_size, bool(config.sequence_parallel),
                          config.fp8, str(getattr(recipe, "value", recipe)))


def megatron_logprobs(
    chunks: list[torch.nn.Module],
    sequences: list[list[int]],
    prompt_lens: list[int],
    temperature: float = 1.0,
) -> list[list[float]]:
    """Log-prob of each token after its prompt under the Megatron model, `[len - prompt_len]` per
    sequence, the same contract as `RolloutEngine.score`; at `temperature` != 1 those of
    softmax(z / temperature), the distribution a sampler at that temperature draws from.
    Collective over the model-parallel group; every rank gets the result.

    Each sequence is one micro-batch, right-padded to the layout's token multiple (sequence
    parallelism, FP8), and interleaved pipelines (fixed shapes) get them padded to one length;
    attention is causal, so padding cannot change earlier positions.
    """
    from megatron.core import parallel_state as ps

    from megatron_uniapl.losses.vocab_parallel import vocab_parallel_logprobs
    from megatron_uniapl.model.pipeline import run_microbatches

    if len(sequences) != len(prompt_lens):
        raise ValueError(f"{len(sequences)} sequences but {len(prompt_lens)} prompt lengths")
    for index, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
        if not 1 <= plen <= len(seq):
            raise ValueError(f"sequence {index}: prompt_len {plen} must be in [1, {len(seq)}]")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    tempered = None if temperature == 1.0 else temperature  # None: the untempered path itself
    device = next(chunks[0].parameters()).device
    config = chunks[0].config
    multiple = layout_token_multiple(config)
    length = -(-max(len(s) for s in sequences) // multiple) * multiple
    fixed = not config.variable_seq_lengths
    micro = []
    for seq in sequences:
        width = length if fixed else -(-len(seq) // multiple) * multiple
        ids = torch.zeros(1, width, dtype=torch.long, device=device)
        ids[0, : len(seq)] = torch.tensor(seq, device=device)
        micro.append({"input_ids": ids, "position_ids": torch.arange(ids.shape[1], device=device)[None]})

    def target_logprobs(logits: torch.Tensor, batch: dict):
        # logits [1, s, V/tp]; position t predicts token t+1. The trainer's own log-prob function.
        targets = batch["input_ids"][:, 1:].contiguous()
        logprobs = vocab_parallel_logprobs(logits[:, :-1], targets, temperature=tempered)
        return torch.zeros((), device=logits.device), torch.tensor(1), {"logprobs": logprobs.detach()[0]}

    was_training = [c.training for c in chunks]
    for chunk in chunks:
        chunk.eval()
    try:
        with torch.no_grad():
            outputs = run_microbatches(chunks, micro, loss_fn=target_logprobs, forward_only=True)
    finally:
        for chunk, mode in zip(chunks, was_training):
            chunk.train(mode)
    table = torch.zeros(len(sequences), length - 1, dtype=torch.float32, device=device)
    for row, out in enumerate(outputs):
        table[row, : out["logprobs"].numel()] = out["logprobs"].float()
    pp_group = ps.get_pipeline_model_parallel_group()
    if dist.get_world_size(pp_group) > 1:
        last = dist.get_process_group_ranks(pp_group)[-1]
        dist.broadcast(table, src=last, group=pp_group)
    rows = table.cpu()
    return [rows[i, plen - 1 : len(seq) - 1].tolist() for i, (seq, plen) in enumerate(zip(sequences, prompt_lens))]


def verify_megatron_sync(
    engine,
    chunks: list[torch.nn.Module],
    sequences: list[list[int]],
    prompt_lens: list[int],
    tolerance: float,
    mean_tolerance: float | None = None,
) -> SyncCheck:
    """Engine vs Megatron log-probs on `sequences`; raise `WeightSyncMismatchError` when the
    largest difference exceeds `tolerance` or the mean exceeds `mean_tolerance`, on every rank
    of the model-parallel group alike."""
    from megatron.core import parallel_state as ps

    check = compare_logprobs(engine.score(sequences, prompt_lens), megatron_logprobs(chunks, sequences, prompt_lens))
    group = ps.get_model_parallel_group()
    if dist.get_world_size(group) > 1:
        # On the model's device: NCCL groups take no CPU tensors (gloo takes CPU ones).
        worst = torch.tensor([check.max_abs_diff, check.mean_abs_diff], dtype=torch.float64,
                             device=next(chunks[0].parameters()).device)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
        worst = worst.cpu()
        check = SyncCheck(float(worst[0]), float(worst[1]), check.num_tokens)
    logger.info(
        "sync check v%s: engine vs trainer log-probs max %.3g, mean %.3g over %d tokens",
        getattr(engine, "weight_version", "?"), check.max_abs_diff, check.mean_abs_diff, check.num_tokens,
    )
    if check.max_abs_diff > tolerance or (mean_tolerance is not None and check.mean_abs_diff > mean_tolerance):
        limits = f"max {tolerance:.3g}" + ("" if mean_tolerance is None else f", mean {mean_tolerance:.3g}")
        raise WeightSyncMismatchError(
            f"after weight sync the engine's log-probs differ from the trainer's (Megatron) by up to "
            f"{check.max_abs_diff:.3g} (mean {check.mean_abs_diff:.3g} over {check.num_tokens} tokens), "
            f"above the tolerance ({limits}): the pushed weights are not the trainer's"
        )
    return check


class SyncVerifier:
    """`verify_megatron_sync` every N syncs, callable as the co-location scheduler's `sync_check`
    (it returns None when this sync is not checked)."""

    def __init__(
        self,
        chunks: list[torch.nn.Module],
        sequences: list[list[int]],
        prompt_lens: list[int],
        config: SyncVerifyConfig | None = None,
    ) -> None:
        self.config = config or SyncVerifyConfig()
        self.config.validate()
        self.chunks = chunks
        self.sequences = sequences
        self.prompt_lens = prompt_lens
        self.num_syncs = 0
        """Syncs seen so far (checked or not)."""
        self.last: SyncCheck | None = None
        """The latest check made."""

    def __call__(self, engine) -> SyncCheck | None:
        every = self.config.every_n_syncs
        self.num_syncs += 1
        if every == 0 or (self.num_syncs - 1) % every:
            return None
        self.last = verify_megatron_sync(engine, self.chunks, self.sequences, self.prompt_lens,
                                         self.config.tolerance, self.config.mean_tolerance)
        return self.last

    @classmethod
    def for_run(cls, config, chunks: list[torch.nn.Module], vocab_size: int) -> SyncVerifier | None:
        """The verifier a training run asks for (`rollout.verify_every`, `rollout.verify_tolerance`
        of a `RunConfig`), or None when verification is off. The check sequences (one longer than
        a KV-cache block) are shortened to fit the engine's max_model_len."""
        rollout = config.rollout
        if rollout.verify_every == 0:
            return None
        limit = rollout.engine.max_model_len - 1
        lengths = tuple(min(n, limit) for n in (24, 160))
        sequences, prompt_lens = check_sequences(vocab_size, lengths)
        verify = SyncVerifyConfig(every_n_syncs=rollout.verify_every, tolerance=float("inf"),
                                  mean_tolerance=rollout.tolerance_for(config.model.dtype))
        return cls(chunks, sequences, prompt_lens, verify)
