"""Live weight sync from the Megatron policy into the co-located vLLM engine.

Who holds engines: every rank holds one shard of one vLLM engine (`distributed_executor_backend=
"external_launcher"`: each rank is one vLLM worker), and vLLM groups consecutive global ranks,
in blocks of its own tensor parallelism, into engines. That block need not be a Megatron
model-parallel group (rollout/engine_layout.py, docs/colocation.md): each rank feeds its own
worker with *full* Hugging Face tensors and vLLM's loader slices the rank's shard out of them,
so no rank needs to know vLLM's sharding, and any trainer layout (TP, PP, DP in any order) can
serve any engine tensor parallelism that divides the world. The consequences:

- every rank needs every full tensor of the model: tensor-parallel shards are all-gathered
  (`iter_hf_tensors`, collective over TP), and each pipeline stage broadcasts its tensors to the
  other stages over the pipeline group, one packed bucket at a time;
- all ranks of one engine must call it in lockstep with identical requests (vLLM's external
  launcher runs one scheduler per rank and relies on identical inputs); the trainer derives each
  engine's requests from the step's global prompt list, which every rank holds.

Alternatives not taken: an engine on one rank per group (the others would sit idle during
generation and the engine's memory would not be spread), or engines tied to the trainer's
model-parallel groups (engine TP = TP x PP: TP 8 engines at 32B, and PP with DP > 1 impossible
under Megatron's default rank order).

Memory: senders hold one packed bucket plus the tensor being gathered; receivers one bucket.
vLLM's layer-wise reload keeps references to the tensors of a layer until the layer is
complete, so buckets are freshly allocated, never reused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_uniapl.convert.megatron_params import global_param_names, iter_hf_tensors
from megatron_uniapl.convert.qwen3 import all_maps, from_megatron_shards
from megatron_uniapl.model.hf_config import Qwen3Arch
from megatron_uniapl.rollout.weight_sync import (
    DEFAULT_BUCKET_BYTES,
    SyncStats,
    bucketize,
    push_buckets,
)

logger = logging.getLogger(__name__)

Bucket = list[tuple[str, torch.Tensor]]
_ALIGN = 16  # byte offsets of packed tensors, so that every dtype can view its slice


class WeightLayoutMismatchError(ValueError):
    """The trainer's model and the engine's model have different tensor names or shapes."""


@dataclass
class MegatronSyncConfig:
    """How the Megatron policy is pushed into the engine."""

    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    """Largest bucket of full tensors gathered, broadcast and loaded at once (a single larger
    tensor travels alone). Bounds the extra memory of a sync."""
    dtype: str | None = None
    """Cast tensors to this dtype before sending ("bfloat16", "float32"); None keeps the
    parameters' dtype. Set it to the engine's dtype when they differ."""
    check_layout: bool = True
    """Compare every tensor name and shape with the engine's model before anything is sent,
    so that a wrong model fails without touching the engine's weights."""

    def validate(self) -> None:
        if self.bucket_bytes <= 0:
            raise ValueError(f"MegatronSyncConfig.bucket_bytes must be positive, got {self.bucket_bytes}")
        if self.dtype is not None and not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"MegatronSyncConfig.dtype: unknown dtype {self.dtype!r}")


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The model under Megatron's wrappers (DDP, Float16Module keep it in `.module`)."""
    while isinstance(getattr(chunk, "module", None), torch.nn.Module):
        chunk = chunk.module
    return chunk


def _groups():
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_group(), ps.get_pipeline_model_parallel_group()


def megatron_hf_shapes(chunks: list[torch.nn.Module], arch: Qwen3Arch) -> dict[str, tuple[int, ...]]:
    """HF name -> full shape of every tensor the sync will send, over all pipeline stages.

    Computed from parameter shapes on the meta device (no data moves); collective over the
    pipeline group (an object all-gather of names and shapes)."""
    tp_group, pp_group = _groups()
    tp_size = dist.get_world_size(tp_group) if tp_group is not None else 1
    local: dict[str, tuple[int, ...]] = {}
    for chunk in map(unwrap, chunks):
        maps = {m.megatron: m for m in all_maps(arch, getattr(chunk, "uniapl_spec", "portable"))}
        params = dict(chunk.named_parameters())
        for name, global_name in global_param_names(chunk).items():
            tmap = maps[global_name]
            if not tmap.export:
                continue
            shard = torch.empty(params[name].shape, device="meta")
            shards = [shard] if tmap.kind == "replicated" else [shard] * tp_size
            for hf_name, full in zip(tmap.hf, from_megatron_shards(tmap.kind, shards, arch)):
                local[hf_name] = tuple(full.shape)
    pp_size = dist.get_world_size(pp_group) if pp_group is not None else 1
    if pp_size == 1:
        return local
    stages: list[dict | None] = [None] * pp_size
    dist.all_gather_object(stages, local, group=pp_group)
    return {k: v for stage in stages for k, v in stage.items()}


def check_layout(trainer: dict[str, tuple[int, ...]], engine: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise `WeightLayoutMismatchError` listing what differs (a few examples of each kind)."""
    extra = sorted(set(trainer) - set(engine))
    missing = sorted(set(engine) - set(trainer))
    shapes = sorted(n for n in set(trainer) & set(engine) if trainer[n] != engine[n])
    if not (extra or missing or shapes):
        return
    parts = []
    if shapes:
        examples = "; ".join(f"{n}: trainer {trainer[n]}, engine {engine[n]}" for n in shapes[:3])
        parts.append(f"{len(shapes)} tensors differ in shape ({examples})")
    if extra:
        parts.append(f"{len(extra)} trainer tensors are not in the engine's model (e.g. {extra[:3]})")
    if missing:
        parts.append(f"{len(missing)} engine tensors have no trainer counterpart (e.g. {missing[:3]})")
    raise WeightLayoutMismatchError(
        f"weight sync: the trainer's model does not match the engine's model {where}: " + "; ".join(parts)
        + ". Nothing was sent; is the engine serving another model size?"
    )


def _stage_stream(chunks, arch, tp_group, dtype) -> Iterator[tuple[str, torch.Tensor]]:
    for chunk in map(unwrap, chunks):
        yield from iter_hf_tensors(chunk, arch, tp_group, dtype)


def _packed(stream, bucket_bytes: int) -> Iterator[tuple[list[tuple], torch.Tensor]]:
    """Copy the stream into flat byte buffers of at most `bucket_bytes` (aligned offsets);
    yield (header, buffer) with header entries (name, shape, dtype, offset, nbytes)."""
    header: list[tuple] = []
    buffer: torch.Tensor | None = None
    used = 0
    for name, tensor in stream:
        nbytes = tensor.numel() * tensor.element_size()
        start = -(-used // _ALIGN) * _ALIGN
        if header and start + nbytes > bucket_bytes:
            yield header, buffer[:used]
            header, buffer, used, start = [], None, 0, 0
        if buffer is None:
            buffer = torch.empty(max(bucket_bytes, nbytes), dtype=torch.uint8, device=tensor.device)
        buffer[start : start + nbytes].copy_(tensor.contiguous().view(-1).view(torch.uint8))
        header.append((name, tuple(tensor.shape), tensor.dtype, start, nbytes))
        used = start + nbytes
        del tensor  # the gathered full tensor; only its packed copy stays
    if header:
        yield header, buffer[:used]


def _unpack(header: list[tuple], buffer: torch.Tensor) -> Bucket:
    return [(name, buffer[off : off + n].view(dtype).view(shape)) for name, shape, dtype, off, n in header]


def iter_model_buckets(
    chunks: list[torch.nn.Module], arch: Qwen3Arch, bucket_bytes: int, dtype: torch.dtype | None = None
) -> Iterator[Bucket]:
    """Buckets of (HF name, full tensor) covering the whole model, the same on every rank.

    Collective over the tensor-parallel and pipeline groups: every rank must consume the
    iterator to the end, in step with the others. `chunks` may be wrapped in Megatron's DDP.
    Pipeline stage s packs each bucket of its own
    tensors into one byte buffer and broadcasts it (header first, as an object) to the other
    stages; an empty header ends the stage.
    """
    tp_group, pp_group = _groups()
    pp_size = dist.get_world_size(pp_group) if pp_group is not None else 1
    local = _stage_stream(chunks, arch, tp_group, dtype)
    if pp_size == 1:
        yield from bucketize(local, bucket_bytes)
        return
    stage_ranks = dist.get_process_group_ranks(pp_group)  # global ranks in stage order
    me = dist.get_rank(pp_group)
    device = next(chunks[0].parameters()).device
    for stage, src in enumerate(stage_ranks):
        if stage == me:
            for header, buffer in _packed(local, bucket_bytes):
                dist.broadcast_object_list([header], src=src, group=pp_group)
                dist.broadcast(buffer, src=src, group=pp_group)
                yield _unpack(header, buffer)
            dist.broadcast_object_list([[]], src=src, group=pp_group)
            continue
        while True:
            box: list = [None]
            dist.broadcast_object_list(box, src=src, group=pp_group)
            header = box[0]
            if not header:
                break
            *_, off, n = header[-1]
            buffer = torch.empty(off + n, dtype=torch.uint8, device=device)
            dist.broadcast(buffer, src=src, group=pp_group)
            yield _unpack(header, buffer)


def sync_megatron_weights(
    engine,
    chunks: list[torch.nn.Module],
    arch: Qwen3Arch,
    version: int,
    config: MegatronSyncConfig | None = None,
) -> SyncStats:
    """Push the live Megatron policy (this rank's model chunks) into `engine` and record `version`.

    Called on every rank of the model-parallel group, each with its own engine shard. The engine
    resets its prefix cache at the end of the update. Returns what moved and how fast (bytes as
    loaded into this rank's engine, i.e. the whole model; time includes gathers and broadcasts).

    Failures: the layout check runs before any tensor moves, so a wrong model fails on every rank
    alike. An engine error in the middle of a pipeline-parallel push stops this rank's stream
    while other stages may still be broadcasting; treat it as fatal for the job (the engine is
    marked as holding mixed weights anyway).
    """
    config = config or MegatronSyncConfig()
    config.validate()
    if config.check_layout and hasattr(engine, "weight_shapes"):
        where = str(getattr(engine, "model_dir", ""))
        check_layout(megatron_hf_shapes(chunks, arch), engine.weight_shapes(), where)
    dtype = getattr(torch, config.dtype) if config.dtype else None
    return push_buckets(engine, iter_model_buckets(chunks, arch, config.bucket_bytes, dtype), version)


class MegatronWeightSync:
    """`sync_megatron_weights` bound to a model: the weight source the co-location scheduler
    calls as `push(engine, version)`."""

    def __init__(self, chunks: list[torch.nn.Module], arch: Qwen3Arch, config: MegatronSyncConfig | None = None):
        self.chunks = chunks
        self.arch = arch
        self.config = config or MegatronSyncConfig()
        self.config.validate()
        self.last: SyncStats | None = None
        """Statistics of the latest sync."""

    def __call__(self, engine, version: int) -> SyncStats:
        self.last = sync_megatron_weights(engine, self.chunks, self.arch, version, self.config)
        return self.last
