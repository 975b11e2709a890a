"""Per-rank scenarios for test_distributed.py, run in spawned worlds of 2 or 4 CPU processes.

Each scenario builds the tiny model at a parallel layout, fills it from the HF checkpoint (or a
converted distributed checkpoint), runs logits and a loss/backward through Megatron's pipeline
schedule, and saves what this rank holds (last-stage logits, HF-named gradients) for the test
process to compare with transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def _inputs(seed: int = 0, b: int = 2, s: int = 24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 151_000, (b, s), generator=g)
    return ids, torch.arange(s).unsqueeze(0).expand(b, -1)


def run_scenario(name: str, hf_dir: str, out_dir: str, tp: int, pp: int, vpp: int | None = None, mcore_dir: str | None = None):
    from megatron.core import parallel_state as ps
    from parity_utils import hf_named_grads, lm_loss_fn

    from megatron_uniapl import parallel
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.mcore_checkpoint import load_model_weights
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import load_qwen3_arch
    from megatron_uniapl.model.pipeline import run_microbatches

    parallel.initialize(tp, pp, virtual_pipeline_stages=vpp)
    arch = load_qwen3_arch(hf_dir)
    options = ModelOptions(tensor_parallel=tp, pipeline_parallel=pp, virtual_pipeline_stages=vpp, dtype="float32", spec="portable")
    chunks = [build_qwen3_model(arch, options, vp_stage=v if vpp else None) for v in range(vpp or 1)]
    tp_rank = ps.get_tensor_model_parallel_rank()
    if mcore_dir:
        load_model_weights(chunks, Path(mcore_dir) / "weights")
    else:
        with HFCheckpointReader(hf_dir) as reader:
            for chunk in chunks:
                load_hf_into_model(chunk, reader, arch, tp_rank, tp)

    ids, pos = _inputs()
    # Two micro-batches: an interleaved pipeline needs at least PP of them.
    micro = [{"input_ids": ids[i:i + 1], "position_ids": pos[i:i + 1], "labels": ids[i:i + 1]} for i in range(2)]
    with torch.no_grad():
        logits = run_microbatches(chunks, micro, forward_only=True)
    total = ids.shape[0] * (ids.shape[1] - 1)
    metrics = run_microbatches(chunks, micro, loss_fn=lm_loss_fn(total))

    result = {"pp_rank": ps.get_pipeline_model_parallel_rank(), "tp_rank": tp_rank, "dp_rank": ps.get_data_parallel_rank()}
    if logits:
        result["logits"] = torch.cat(logits, dim=0)
        result["loss"] = (sum(m["nll_sum"] for m in metrics) / total).item()
    grads = {}
    for chunk in chunks:
        grads.update(hf_named_grads(chunk, arch, ps.get_tensor_model_parallel_group(), sum_qk_norms=True))
    result["grads"] = grads
    torch.save(result, Path(out_dir) / f"{name}_rank{dist.get_rank()}.pt")


def run_all(scenarios: list[dict]) -> None:
    """Entry point of a spawned rank: every scenario in turn, in one world (the default process
    group is kept; only Megatron's model-parallel groups are rebuilt per scenario)."""
    from megatron_uniapl import parallel

    for scenario in scenarios:
        run_scenario(**scenario)
    parallel.destroy()
