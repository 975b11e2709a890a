"""One torchrun rank of the co-location rehearsal in tests/test_vllm_engine.py (not a test itself).

Two ranks in a gloo world stand for two training ranks; each runs a vLLM engine with tensor
parallelism 2 through `external_launcher`. Rank 0 writes what both ranks saw to a JSON file.
Usage: torchrun --nproc-per-node 2 vllm_colocated_worker.py MODEL_DIR OUT_JSON
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist


def reference_logprobs(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logp = model(torch.tensor([seq])).logits[0].log_softmax(-1)
    return logp[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]


def main(model_dir: str, out_path: str) -> None:
    dist.init_process_group("gloo")
    from transformers import Qwen3ForCausalLM

    from megatron_uniapl.config.rollout import SamplingConfig, VLLMEngineConfig
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_dir, VLLMEngineConfig(
        dtype="float32", kv_cache_memory_bytes=64 << 20, max_model_len=512, enforce_eager=True,
        tensor_parallel_size=2, distributed_executor_backend="external_launcher",
    ))
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    seq = list(range(1000, 1200))  # longer than one KV block
    before = torch.tensor(engine.score([seq], [1])[0])
    result = {"diff_before": float((before - reference_logprobs(model, seq)).abs().max())}
    with torch.no_grad():
        torch.manual_seed(0)
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    engine.update_weights(model.state_dict().items(), version=1, bucket_bytes=40_000)
    after = torch.tensor(engine.score([seq], [1])[0])
    result["diff_after"] = float((after - reference_logprobs(model, seq)).abs().max())
    result["moved"] = float((after - before).abs().max())
    gens = engine.generate([seq], SamplingConfig(n=2, max_tokens=6, seed=4))
    tokens = [g.token_ids for g in gens]
    engine.shutdown()
    # the trainer's world must survive the engine
    gathered = [None, None]
    dist.all_gather_object(gathered, {"result": result, "tokens": tokens})
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
