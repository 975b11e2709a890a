"""Shared by the Megatron -> engine sync tests (in-process and spawned ranks): engine settings,
fixed prompts and check sequences, and one plain optimizer step on a Megatron model."""

from __future__ import annotations

import torch

FP32_TOL = 1e-4
LONG_PROMPT = 150  # longer than one KV-cache block (128 tokens on CPU)


def engine_config(tensor_parallel: int = 1):
    from megatron_uniapl.config.rollout import VLLMEngineConfig

    return VLLMEngineConfig(
        dtype="float32", kv_cache_memory_bytes=64 << 20, max_model_len=512, enforce_eager=True,
        tensor_parallel_size=tensor_parallel,
        distributed_executor_backend="external_launcher" if tensor_parallel > 1 else None,
    )


def prompts_and_checks(vocab_size: int):
    """Two prompts (one longer than a KV block), and check sequences with their prompt lengths."""
    from megatron_uniapl.rollout.megatron_verify import check_sequences

    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(0, 151_000, (n,), generator=gen).tolist() for n in (LONG_PROMPT, 6)]
    seqs, plens = check_sequences(vocab_size, lengths=(9, 40, 140), seed=5)
    return prompts, seqs, plens


def one_step(chunks, sequences: list[list[int]], lr: float = 1e-2) -> None:
    """One Adam step on the token-mean NLL of `sequences`, through Megatron's pipeline schedule.

    A plain torch optimizer over the local parameters; the one gradient reduction Megatron's
    optimizer would add for this model is done here: q/k layer-norm weights are replicated over
    tensor parallelism but each rank sees only its heads, so their gradients are summed over TP.
    """
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from parity_utils import lm_loss_fn

    from megatron_uniapl.model.pipeline import run_microbatches

    params = [p for c in chunks for p in c.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    optimizer.zero_grad()
    micro = []
    for seq in sequences:
        ids = torch.tensor([seq])
        micro.append({"input_ids": ids, "position_ids": torch.arange(len(seq))[None], "labels": ids})
    for chunk in chunks:
        chunk.train()
    run_microbatches(chunks, micro, loss_fn=lm_loss_fn(sum(len(s) - 1 for s in sequences)))
    tp_group = ps.get_tensor_model_parallel_group()
    if dist.get_world_size(tp_group) > 1:
        for chunk in chunks:
            for name, param in chunk.named_parameters():
                if ("q_layernorm" in name or "k_layernorm" in name) and param.grad is not None:
                    dist.all_reduce(param.grad, group=tp_group)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
