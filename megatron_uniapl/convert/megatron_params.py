"""Apply the Qwen3 mapping to live Megatron model chunks: fill them from HF tensors, or stream
their parameters out as HF-named full tensors.

`load_hf_into_model` runs on every rank for its own pipeline stage and tensor-parallel shard.
`iter_hf_tensors` is collective over the tensor-parallel group (all-gather per parameter, so
memory stays at one full tensor beyond the shard); each pipeline stage yields its own tensors.
It is the source of both `tools/convert_hf.py export` and the live weight sync.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import torch
import torch.distributed as dist

from megatron_uniapl.convert.hf_io import CheckpointMismatchError, HFCheckpointReader
from megatron_uniapl.convert.qwen3 import (
    TensorMap,
    all_maps,
    from_megatron_shards,
    to_megatron_shard,
)
from megatron_uniapl.model.hf_config import Qwen3Arch

logger = logging.getLogger(__name__)

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def global_param_names(model: torch.nn.Module) -> dict[str, str]:
    """Local parameter name -> name with the global layer index (pipeline stages number from 0)."""
    names = {}
    layers = getattr(getattr(model, "decoder", None), "layers", [])
    for name, _ in model.named_parameters():
        m = _LAYER.match(name)
        if m:
            layer = layers[int(m.group(1))]
            names[name] = f"decoder.layers.{layer.layer_number - 1}.{m.group(2)}"
        else:
            names[name] = name
    return names


def _maps_by_megatron_name(arch: Qwen3Arch, spec: str) -> dict[str, TensorMap]:
    return {m.megatron: m for m in all_maps(arch, spec)}


def load_hf_into_model(
    model: torch.nn.Module, reader: HFCheckpointReader, arch: Qwen3Arch, tp_rank: int, tp_size: int
) -> int:
    """Copy this rank's shard of every parameter of `model` from the HF checkpoint. Returns bytes read."""
    maps = _maps_by_megatron_name(arch, getattr(model, "uniapl_spec", "portable"))
    params = dict(model.named_parameters())
    names = global_param_names(model)
    # Progress in tenths for real models; tiny ones load too fast to need it.
    report_every = len(names) // 10 if len(names) >= 100 else len(names) + 1
    total = 0
    with torch.no_grad():
        for i, (local, global_name) in enumerate(names.items()):
            if i and i % report_every == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
                logger.info("loading HF weights: %d/%d tensors (%.1f MiB so far)", i, len(names), total / 2**20)
            tmap = maps.get(global_name)
            if tmap is None:
                raise CheckpointMismatchError(f"Megatron parameter {global_name} has no Hugging Face counterpart")
            shard = to_megatron_shard(tmap.kind, [reader.slice(n) for n in tmap.hf], arch, tp_rank, tp_size)
            param = params[local]
            if tuple(shard.shape) != tuple(param.shape):
                raise CheckpointMismatchError(
                    f"{global_name} (from {', '.join(tmap.hf)}): shard shape {list(shard.shape)} "
                    f"!= parameter shape {list(param.shape)}"
                )
            param.copy_(shard.to(param.dtype))
            total += shard.numel() * shard.element_size()
    return total


def _gather_tp(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    size = dist.get_world_size(group) if group is not None else 1
    if size == 1:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def iter_hf_tensors(
    model: torch.nn.Module, arch: Qwen3Arch, tp_group=None, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, full tensor) for the parameters of this pipeline stage.

    Collective over `tp_group`: every TP rank must iterate in step (all of them receive the full
    tensors; callers usually keep rank 0's). The tied output layer is skipped (HF stores it once).
    """
    maps = _maps_by_megatron_name(arch, getattr(model, "uniapl_spec", "portable"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for local, global_name in global_param_names(model).items():
            tmap = maps[global_name]
            if not tmap.export:
                continue
            shards = _gather_tp(params[local].detach(), tp_group) if tmap.kind != "replicated" else [params[local].detach()]
            for name, tensor in zip(tmap.hf, from_megatron_shards(tmap.kind, shards, arch)):
                yield name, tensor if dtype is None else tensor.to(dtype)
