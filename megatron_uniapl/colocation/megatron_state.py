"""Which of the Megatron trainer's tensors leave the device while vLLM generates.

The co-location schedule parks the trainer's optimizer state and gradients with a
`TensorOffloader` (storage by storage, so every view stays valid). This module finds those
tensors on Megatron's objects:

- gradients: the contiguous grad buffers of Megatron's DDP (`DistributedDataParallel.buffers`,
  `.expert_parallel_buffers`, each `grad_data`; every `param.main_grad` is a view into one), or
  `param.main_grad` / `param.grad` of an unwrapped model;
- optimizer state: the per-parameter state of the torch optimizer inside Megatron's optimizer
  (Adam's moments; through `ChainedOptimizer.chained_optimizers` and the `.optimizer` of each
  Megatron optimizer) and the fp32 main copies of bf16 parameters (`shard_fp32_from_float16_groups`
  of the DistributedOptimizer, `fp32_from_float16_groups` of the Float16 optimizer).

The model's own parameters must stay resident: the engine is synced from them while the rest is
parked. With fp32 parameters, Megatron's optimizers hold *views* of the parameters (the
DistributedOptimizer's fp32 shards point into DDP's parameter buffer); offloading such a storage
would free the model. Any tensor sharing a storage with a model parameter is therefore left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from megatron_uniapl.colocation.offload import TensorOffloader, optimizer_state_tensors

logger = logging.getLogger(__name__)

_MAIN_PARAM_GROUPS = ("shard_fp32_from_float16_groups", "fp32_from_float16_groups")


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    storage = tensor.untyped_storage()
    return str(storage.device), storage.data_ptr()


def _model_storages(model_chunks: Iterable[torch.nn.Module]) -> set[tuple[str, int]]:
    return {_storage_key(p) for chunk in model_chunks for p in chunk.parameters()}


def _megatron_optimizers(optimizer) -> list:
    """The leaf optimizers of a (possibly chained) Megatron optimizer, or [optimizer] for torch's."""
    if hasattr(optimizer, "chained_optimizers"):
        return [leaf for child in optimizer.chained_optimizers for leaf in _megatron_optimizers(child)]
    return [optimizer]


def grad_buffer_tensors(model_chunks: Iterable[torch.nn.Module]) -> list[torch.Tensor]:
    """Gradient storage of each model chunk: DDP's grad buffers when wrapped in Megatron's DDP,
    else each parameter's `main_grad` (or `.grad`)."""
    out: list[torch.Tensor] = []
    for chunk in model_chunks:
        # Megatron's DDP keeps its buffers in lists; on a plain module `buffers` is nn.Module's method.
        buffers = [b for attr in ("buffers", "expert_parallel_buffers")
                   if isinstance(getattr(chunk, attr, None), list) for b in getattr(chunk, attr)]
        if buffers:
            out.extend(b.grad_data for b in buffers if getattr(b, "grad_data", None) is not None)
            continue
        for param in chunk.parameters():
            grad = getattr(param, "main_grad", None)
            if grad is None:
                grad = param.grad
            if grad is not None:
                out.append(grad)
    return out


def optimizer_tensors(optimizer) -> list[torch.Tensor]:
    """Optimizer state and fp32 main parameters of a Megatron (or plain torch) optimizer."""
    out: list[torch.Tensor] = []
    for leaf in _megatron_optimizers(optimizer):
        inner = getattr(leaf, "optimizer", leaf)
        if isinstance(inner, torch.optim.Optimizer):
            out.extend(optimizer_state_tensors(inner))
        for attr in _MAIN_PARAM_GROUPS:
            for group in getattr(leaf, attr, None) or []:
                out.extend(t for t in group if isinstance(t, torch.Tensor))
    return out


def megatron_train_state_tensors(model_chunks: list[torch.nn.Module], optimizer) -> list[torch.Tensor]:
    """Gradients and optimizer state, without any tensor that shares storage with a parameter."""
    params = _model_storages(model_chunks)
    tensors = grad_buffer_tensors(model_chunks) + (optimizer_tensors(optimizer) if optimizer is not None else [])
    kept = [t for t in tensors if _storage_key(t) not in params]
    if len(kept) < len(tensors):
        logger.debug("offload: %d tensors share storage with model parameters and stay", len(tensors) - len(kept))
    return kept


def megatron_train_state(model_chunks: list[torch.nn.Module], optimizer, **offloader_kwargs) -> TensorOffloader:
    """A `TensorOffloader` over the trainer's gradients and optimizer state, for the co-location
    scheduler. The tensors are collected at each offload (optimizer state appears at the first
    step). Keyword arguments go to `TensorOffloader`."""
    return TensorOffloader(lambda: megatron_train_state_tensors(model_chunks, optimizer), **offloader_kwargs)
