"""Helpers shared by the parity tests: a Megatron model filled from a HF directory, a plain LM loss
on vocabulary-parallel logits, and Megatron gradients renamed to HF names."""

from __future__ import annotations

import torch

from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.convert.hf_io import HFCheckpointReader
from megatron_uniapl.convert.megatron_params import (
    global_param_names,
    load_hf_into_model,
)
from megatron_uniapl.convert.qwen3 import all_maps, from_megatron_shards
from megatron_uniapl.model.builder import build_qwen3_model
from megatron_uniapl.model.hf_config import load_qwen3_arch


def megatron_from_hf(hf_dir, tp_rank=0, tp_size=1, pp_size=1):
    arch = load_qwen3_arch(hf_dir)
    model = build_qwen3_model(
        arch, ModelOptions(tensor_parallel=tp_size, pipeline_parallel=pp_size, dtype="float32", spec="portable")
    )
    with HFCheckpointReader(hf_dir) as reader:
        load_hf_into_model(model, reader, arch, tp_rank, tp_size)
    return arch, model


def lm_loss_fn(total_tokens: int):
    """Token-mean next-token NLL over the global batch, computed on vocab-parallel logits."""
    from megatron.core import tensor_parallel

    def loss_fn(logits, batch):
        # logits [b, s, V/tp]; predict token t+1 from position t.
        labels = batch["labels"]
        nll = tensor_parallel.vocab_parallel_cross_entropy(logits[:, :-1].float().contiguous(), labels[:, 1:].contiguous())
        loss = nll.sum() / total_tokens
        return loss, torch.tensor(nll.numel()), {"nll_sum": nll.sum().detach()}

    return loss_fn


def hf_named_grads(model, arch, tp_group=None, sum_qk_norms: bool = False) -> dict[str, torch.Tensor]:
    """Megatron gradients of this stage under HF names (TP-gathered when tp_group is given).

    sum_qk_norms: all-reduce the replicated q/k norm gradients over TP first, as Megatron's
    finalize_model_grads does in training; only for gradients that did not go through it.

    The tied output layer of a later pipeline stage is reported under `lm_head.weight@tied` so the
    caller can add it to the embedding gradient of the first stage.
    """
    import torch.distributed as dist

    maps = {m.megatron: m for m in all_maps(arch)}
    params = dict(model.named_parameters())
    out = {}
    for local, global_name in global_param_names(model).items():
        tmap = maps[global_name]
        grad = params[local].grad
        if grad is None:
            grad = getattr(params[local], "main_grad", None)
        shards = [grad]
        if sum_qk_norms and tp_group is not None and ("q_layernorm" in global_name or "k_layernorm" in global_name):
            # Each TP rank sees only its own heads: the replicated q/k norm weights' gradients are
            # partial sums, which Megatron's finalize_model_grads all-reduces over TP in training.
            grad = grad.clone()
            dist.all_reduce(grad, group=tp_group)
            shards = [grad]
        if tp_group is not None and tmap.kind != "replicated" and dist.get_world_size(tp_group) > 1:
            shards = [torch.empty_like(grad) for _ in range(dist.get_world_size(tp_group))]
            dist.all_gather(shards, grad.contiguous(), group=tp_group)
        names = tmap.hf if tmap.export else ("lm_head.weight@tied",)
        for name, tensor in zip(names, from_megatron_shards(tmap.kind, shards, arch)):
            out[name] = tensor.clone()
    return out


def hf_reference(hf_dir, input_ids: torch.Tensor):
    """HF logits, mean next-token loss and gradients for the same batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    logits = model(input_ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1)
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads
