"""The per-rank work of the conversion tool: import, export and verify.

Each function runs on every rank of a world of TP x PP processes (spawned by the tool on CPU over
gloo, or launched by torchrun/srun). Validation that can fail with a user error happens in the
tool before any process is started; what remains here are collective operations.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_uniapl import parallel
from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.convert import mcore_checkpoint as ckpt
from megatron_uniapl.convert.hf_io import HFCheckpointReader, ShardedSafetensorsWriter
from megatron_uniapl.convert.megatron_params import iter_hf_tensors, load_hf_into_model
from megatron_uniapl.model.builder import build_qwen3_model
from megatron_uniapl.model.hf_config import parse_qwen3_config

logger = logging.getLogger(__name__)

_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4}


def _build(hf_config: dict, options: ModelOptions):
    from megatron.core import parallel_state

    parallel.initialize(options.tensor_parallel, options.pipeline_parallel)
    arch = parse_qwen3_config(hf_config)
    model = build_qwen3_model(arch, options)
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    return arch, model, tp_rank


def import_worker(hf_dir: str, out_dir: str, hf_config: dict, options: ModelOptions, token: str) -> None:
    """Load this rank's HF shards into its Megatron stage and save a distributed checkpoint."""
    arch, model, tp_rank = _build(hf_config, options)
    start = time.time()
    with HFCheckpointReader(hf_dir) as reader:
        nbytes = load_hf_into_model(model, reader, arch, tp_rank, options.tensor_parallel)
    if dist.get_rank() == 0:
        logger.info("loaded rank 0's shard (%.1f MiB) in %.1f s", nbytes / 2**20, time.time() - start)
    stage = ckpt.staging_dir(out_dir, token)
    ckpt.save_model_weights([model], stage / "weights")
    dist.barrier()
    if dist.get_rank() == 0:
        ckpt.write_model_files(stage, hf_dir, hf_config, model.uniapl_spec, options)
        ckpt.publish(stage, out_dir)
    dist.barrier()
    parallel.destroy()


def export_worker(mcore_dir: str, out_dir: str, options: ModelOptions, token: str, shard_bytes: int) -> None:
    """Load the distributed checkpoint at this layout and write HF safetensors (one file set per stage)."""
    from megatron.core import parallel_state

    meta = ckpt.ModelCheckpointMeta.read(mcore_dir)
    arch, model, tp_rank = _build(meta.hf_config, options)
    ckpt.load_model_weights([model], Path(mcore_dir) / "weights")
    stage = ckpt.staging_dir(out_dir, token)
    pp_rank = parallel_state.get_pipeline_model_parallel_rank()
    writer = ShardedSafetensorsWriter(stage / f"stage{pp_rank}", shard_bytes=shard_bytes)
    dtype = getattr(torch, meta.dtype)
    start = time.time()
    for name, tensor in iter_hf_tensors(model, arch, parallel_state.get_tensor_model_parallel_group(), dtype):
        if tp_rank == 0:
            writer.add(name, tensor)
    if dist.get_rank() == 0:
        logger.info("stage 0 gathered %.1f MiB in %.1f s", writer.total_bytes / 2**20, time.time() - start)
    if tp_rank == 0:
        writer.close()
    dist.barrier()
    if dist.get_rank() == 0:
        _merge_stages(stage, options.pipeline_parallel)
        for name in ("config.json", *ckpt.HF_EXTRA_FILES, *ckpt.TOKENIZER_FILES):
            src = Path(mcore_dir) / "hf" / name
            if src.is_file():
                shutil.copyfile(src, stage / name)
        ckpt.publish(stage, out_dir)
    dist.barrier()
    parallel.destroy()


def _merge_stages(stage: Path, num_stages: int) -> None:
    """Move every pipeline stage's safetensors files into one HF directory with one index."""
    from safetensors import safe_open

    from megatron_uniapl.convert.hf_io import INDEX_NAME, SINGLE_NAME

    files = []
    for s in range(num_stages):
        files += sorted((stage / f"stage{s}").glob("*.safetensors"))
    weight_map, total = {}, 0
    n = len(files)
    for i, path in enumerate(files):
        final = SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                weight_map[key] = final
                sl = f.get_slice(key)
                total += math.prod(sl.get_shape()) * _DTYPE_BYTES[sl.get_dtype()]
        path.rename(stage / final)
    for s in range(num_stages):
        shutil.rmtree(stage / f"stage{s}", ignore_errors=True)
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (stage / INDEX_NAME).write_text(json.dumps(index, indent=2))


def verify_worker(hf_dir: str, mcore_dir: str, options: ModelOptions, token_ids: list[list[int]], result_path: str) -> None:
    """Run the Megatron model on fixed ids; rank 0 of the last stage writes its logits to a file."""
    from megatron.core import parallel_state

    from megatron_uniapl.model.pipeline import run_microbatches

    meta = ckpt.ModelCheckpointMeta.read(mcore_dir)
    _, model, _ = _build(meta.hf_config, options)
    ckpt.load_model_weights([model], Path(mcore_dir) / "weights")
    model.eval()
    ids = torch.tensor(token_ids)
    positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    with torch.no_grad():
        outputs = run_microbatches([model], [{"input_ids": ids, "position_ids": positions}], forward_only=True)
    if parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0:
        torch.save(outputs[0].float(), result_path)
    dist.barrier()
    parallel.destroy()
