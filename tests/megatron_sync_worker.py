"""One rank of the co-located Megatron -> vLLM sync scenarios in tests/test_megatron_sync.py
(not a test itself; run by `parallel.run_world` in a spawned world of 2 CPU processes).

Both ranks hold one shard of a vLLM TP=2 engine (external launcher), started once and reused
by every scenario (one live engine per process). Each scenario lays the Megatron model out
differently (TP=2, then PP=2), syncs the checkpoint's weights, generates, takes one optimizer
step, syncs again and checks the engine against Megatron. Rank 0 writes what all ranks saw.
"""

from __future__ import annotations

import json

import torch.distributed as dist
from sync_helpers import FP32_TOL, engine_config, one_step, prompts_and_checks


def scenario(engine, hf_dir: str, name: str, tp: int, pp: int, version: int) -> dict:
    from megatron.core import parallel_state as ps
    from parity_utils import megatron_from_hf

    from megatron_uniapl import parallel
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronSyncConfig,
        sync_megatron_weights,
    )
    from megatron_uniapl.rollout.megatron_verify import verify_megatron_sync

    parallel.initialize(tp, pp)
    arch, model = megatron_from_hf(hf_dir, ps.get_tensor_model_parallel_rank(), tp, pp)
    prompts, seqs, plens = prompts_and_checks(arch.vocab_size)
    config = MegatronSyncConfig(bucket_bytes=40_000)
    # The engine still holds the previous scenario's trained weights: the checkpoint's come back.
    sync_megatron_weights(engine, [model], arch, version, config)
    base = verify_megatron_sync(engine, [model], seqs, plens, FP32_TOL)
    before = engine.score(seqs, plens)
    gens = engine.generate(prompts, SamplingConfig(n=2, max_tokens=8, seed=3))
    one_step([model], [prompts[g.prompt_index] + g.token_ids for g in gens])
    stats = sync_megatron_weights(engine, [model], arch, version + 1, config)
    after_check = verify_megatron_sync(engine, [model], seqs, plens, FP32_TOL)
    after = engine.score(seqs, plens)
    moved = max(abs(a - b) for xs, ys in zip(after, before) for a, b in zip(xs, ys))
    regen = engine.generate(prompts[:1], SamplingConfig(temperature=0.0, max_tokens=6))[0]
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    ref = megatron_logprobs([model], [prompts[0] + regen.token_ids], [len(prompts[0])])[0]
    return {
        "name": name, "rank": dist.get_rank(), "version": engine.weight_version,
        "base_max": base.max_abs_diff, "after_max": after_check.max_abs_diff, "moved": moved,
        "regen_max": max(abs(a - b) for a, b in zip(regen.logprobs, ref)),
        "tokens": [g.token_ids for g in gens], "num_bytes": stats.num_bytes, "num_buckets": stats.num_buckets,
        "max_bucket": stats.max_bucket_bytes,
    }


def run_all(hf_dir: str, out_path: str) -> None:
    from megatron_uniapl import parallel
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    parallel.init_process_group()
    engine = VLLMEngine(hf_dir, engine_config(tensor_parallel=2))
    results = []
    try:
        results.append(scenario(engine, hf_dir, "tp2", tp=2, pp=1, version=10))
        results.append(scenario(engine, hf_dir, "pp2", tp=1, pp=2, version=20))
    finally:
        engine.shutdown()
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, results)  # the trainer's world outlives the engine
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    parallel.destroy()
