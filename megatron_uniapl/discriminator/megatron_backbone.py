"""The co-trained discriminator on the policy's own Megatron-Core Qwen3 code, sharded the same way.

The backbone is a Qwen3 `GPTModel` from `build_qwen3_model` built with `post_process=False`: the
embedding and transformer layers, tensor-parallel exactly like the policy (attention heads, MLP
width and vocabulary split over the TP group), returning hidden states instead of logits. On top
sit a final RMSNorm (the policy's own final norm, when initialized from a checkpoint) and a
scalar head, both small and REPLICATED on every tensor-parallel rank. The hidden state of the
LAST token of each sequence is the classifier's input, so the score reads the whole response
through causal attention.

Sequences of a batch run as one packed row ("thd": no padding, no attention across sequences),
the same packed path the policy trains on. Its training logic (loss, label smoothing, update
ratio, optimizer, score clipping) is `discriminator.cotrained.CoTrainedDiscriminator`; this module
is the `SequenceScorer` behind it, plus a tensor-parallel-aware `clip_grad_norm` that the
trainer uses instead of torch's (a per-rank norm over shards would differ between ranks, and
replicated weights would drift apart), and `finish_grad_sync`, which averages gradients over
data-parallel ranks (and sums the shared q/k-norm gradients over TP ranks). Each rank's
per-parameter AdamW then updates its own shard.

Limits: one pipeline stage (PP = 1: the discriminator is small next to the policy; a pipelined
one would need the schedule for a scalar output); every rank of the TP group must be given the
same sequences; no R1 penalty (it needs gradients with respect to input embeddings).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.model.hf_config import Qwen3Arch


class MegatronSequenceScorer(torch.nn.Module):
    """(input_ids [N, S], attention_mask [N, S]) -> [N] "expert" logits, on a Megatron backbone."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int, eps: float, head_seed: int = 0):
        super().__init__()
        self.backbone = backbone
        dtype = next(backbone.parameters()).dtype
        device = next(backbone.parameters()).device
        self.final_norm = torch.nn.RMSNorm(hidden_size, eps=eps, device=device, dtype=dtype)
        self.head = torch.nn.Linear(hidden_size, 1, device=device, dtype=dtype)
        # The head is replicated over tensor-parallel ranks: every rank draws the same values.
        g = torch.Generator().manual_seed(head_seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(1, hidden_size, generator=g) / math.sqrt(hidden_size))
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from megatron_uniapl.model.packing import (
            packed_seq_params,
            position_ids_from_lengths,
        )

        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask "
                f"{tuple(attention_mask.shape)} must be equal [N, S]"
            )
        keep = attention_mask.bool()
        lengths = keep.sum(dim=1).tolist()
        if min(lengths) == 0:
            raise ValueError(f"sequence {lengths.index(0)} has no tokens (attention_mask all 0)")
        device = next(self.backbone.parameters()).device
        packed_ids = input_ids[keep].unsqueeze(0).to(device)  # [1, T], row-major: sequence by sequence
        positions = position_ids_from_lengths(lengths, device=device)
        hidden = self.backbone(
            packed_ids, positions, None, packed_seq_params=packed_seq_params(lengths, device)
        )
        last = torch.cumsum(torch.tensor(lengths, device=device), 0) - 1
        features = hidden[last, 0]  # hidden is [T, 1, H] (Megatron's [s, b, h])
        return self.head(self.final_norm(features)).squeeze(-1).float()

    def finish_grad_sync(self) -> None:
        """Complete the gradients after backward, as `finalize_model_grads` does for the policy.

        1. Qwen3's q/k RMSNorm weights are shared by all heads but each tensor-parallel rank sees
           only its heads, so their gradients are SUMMED over the TP group.
        2. Every gradient is AVERAGED over the data-parallel group (each rank scored its own
           responses; with equally sized per-rank batches this is the gradient of the loss over
           all of them).
        """
        from megatron.core import parallel_state

        if not parallel_state.model_parallel_is_initialized():
            return
        tp_group = parallel_state.get_tensor_model_parallel_group()
        if dist.get_world_size(tp_group) > 1:
            _all_reduce_coalesced(
                [
                    p.grad
                    for n, p in self.named_parameters()
                    if p.grad is not None and ("q_layernorm" in n or "k_layernorm" in n)
                ],
                tp_group,
            )
        dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        dp_size = dist.get_world_size(dp_group)
        if dp_size > 1:
            _all_reduce_coalesced(
                [p.grad for p in self.parameters() if p.grad is not None], dp_group, 1.0 / dp_size
            )

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm over all shards and replicas to `max_norm`; return it.

        Sharded parameters (Megatron marks them `tensor_model_parallel`) contribute their squared
        norms summed over the TP group; replicated ones (norms, the head) are counted once.
        """
        from megatron.core import parallel_state

        grads = [(p, p.grad) for p in self.parameters() if p.grad is not None]
        sharded = sum(
            (g.float().pow(2).sum() for p, g in grads if getattr(p, "tensor_model_parallel", False)),
            torch.zeros(()),
        )
        replicated = sum(
            (g.float().pow(2).sum() for p, g in grads if not getattr(p, "tensor_model_parallel", False)),
            torch.zeros(()),
        )
        if (
            parallel_state.model_parallel_is_initialized()
            and parallel_state.get_tensor_model_parallel_world_size() > 1
        ):
            sharded = sharded.to(grads[0][1].device)
            dist.all_reduce(sharded, group=parallel_state.get_tensor_model_parallel_group())
        norm = torch.sqrt(sharded.cpu() + replicated.cpu())
        coeff = max_norm / (float(norm) + 1e-6)
        if coeff < 1.0:
            for _, g in grads:
                g.mul_(coeff)
        return norm


def _all_reduce_coalesced(grads: list[torch.Tensor], group, scale: float = 1.0) -> None:
    """Sum `grads` over `group` in one collective (then multiply by `scale`), in place."""
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=group)
    if scale != 1.0:
        flat *= scale
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def build_megatron_discriminator(
    arch: Qwen3Arch, options: ModelOptions, hf_dir: str | None = None, head_seed: int = 0
) -> MegatronSequenceScorer:
    """A discriminator scorer at `options`' tensor-parallel layout (Megatron state initialized).

    arch:      the backbone architecture (e.g. the policy's, or a smaller Qwen3).
    hf_dir:    a Hugging Face Qwen3 checkpoint to initialize the backbone and final norm from
               (e.g. the policy's starting point); None = random initialization.
    head_seed: seed of the scalar head's initialization (identical on every rank).
    """
    from megatron.core import parallel_state

    from megatron_uniapl.model.builder import build_qwen3_model

    if options.pipeline_parallel != 1:
        raise ValueError(
            f"discriminator.model.pipeline_parallel must be 1, got {options.pipeline_parallel}: "
            f"the discriminator shards over tensor parallelism only"
        )
    backbone = build_qwen3_model(arch, options, pre_process=True, post_process=False)
    scorer = MegatronSequenceScorer(backbone, arch.hidden_size, arch.rms_norm_eps, head_seed)
    if hf_dir is not None:
        from megatron_uniapl.convert.hf_io import HFCheckpointReader
        from megatron_uniapl.convert.megatron_params import load_hf_into_model

        with HFCheckpointReader(hf_dir) as reader:
            load_hf_into_model(
                backbone,
                reader,
                arch,
                parallel_state.get_tensor_model_parallel_rank(),
                options.tensor_parallel,
            )
            with torch.no_grad():
                scorer.final_norm.weight.copy_(reader.tensor("model.norm.weight"))
    return scorer
