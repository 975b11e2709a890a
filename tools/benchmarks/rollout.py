"""Rollout benchmark: weight-sync speed and generation throughput of the vLLM engine.

Two ratios, each against a baseline measured in the same process on the same model:
- weight sync (HF-named tensors -> live engine, bucketed) vs a plain `copy_` of the same bytes
  into preallocated tensors: what the engine's load path costs over the memory traffic itself;
- engine generation tokens/s vs transformers' `generate` on the same prompts: what an inference
  engine buys over the trainer's own model for rollouts.

Usage: `python tools/bench.py rollout [--hidden 64 --layers 2 --batch 8 --new-tokens 16]`.
On a CPU the absolute numbers mean little (vLLM's CPU backend serves with one thread); the
ratios are the point. vLLM sets torch to its thread count for the whole process, so both sides
of each comparison run with the same threads.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

import torch

from benchmarks._timing import median_seconds


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the random Qwen3")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers")
    parser.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per prompt")
    parser.add_argument("--bucket-mb", type=float, default=16.0, help="weight-sync bucket size (MiB)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--kv-cache-mb", type=int, default=128, help="KV cache on the CPU platform (MiB)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(argv or []))
    logging.basicConfig(level=logging.WARNING)
    from transformers import Qwen3ForCausalLM

    from megatron_uniapl.config.rollout import SamplingConfig, VLLMEngineConfig
    from megatron_uniapl.model.tiny import create_tiny_qwen3
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    heads = max(2, args.hidden // 32)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_qwen3(
            tmp, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=32,
        )
        engine = VLLMEngine(model_dir, VLLMEngineConfig(
            dtype="float32", kv_cache_memory_bytes=args.kv_cache_mb << 20,
            max_model_len=args.prompt_len + args.new_tokens + 1, enforce_eager=True,
        ))
        try:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            hf = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
            state = [(name, t.detach().clone()) for name, t in hf.state_dict().items()]
            num_bytes = sum(t.numel() * t.element_size() for _, t in state)

            # ---- weight sync vs memory copy ----
            bucket = int(args.bucket_mb * (1 << 20))
            version = iter(range(1, 10**6))
            engine.update_weights(state, next(version), bucket_bytes=bucket)  # warm-up
            sync_s = median_seconds(lambda: engine.update_weights(state, next(version), bucket_bytes=bucket),
                                  args.repeats)
            targets = [torch.empty_like(t) for _, t in state]
            copy_s = median_seconds(lambda: [d.copy_(t) for d, (_, t) in zip(targets, state)], args.repeats)

            # ---- generation throughput ----
            gen = torch.Generator().manual_seed(0)
            prompts = torch.randint(0, 151000, (args.batch, args.prompt_len), generator=gen)
            sampling = SamplingConfig(temperature=1.0, max_tokens=args.new_tokens, seed=0)
            engine.generate(prompts.tolist(), sampling)  # warm-up
            engine_tokens = []

            def run_engine():
                engine_tokens.append(sum(len(g.token_ids) for g in engine.generate(prompts.tolist(), sampling)))

            engine_s = median_seconds(run_engine, args.repeats)
            hf_tokens = []

            def run_hf():
                with torch.no_grad():
                    out = hf.generate(prompts.to(device), attention_mask=torch.ones_like(prompts).to(device),
                                      do_sample=True, max_new_tokens=args.new_tokens,
                                      min_new_tokens=args.new_tokens, pad_token_id=151643)
                hf_tokens.append((out.shape[1] - args.prompt_len) * args.batch)

            run_hf()  # warm-up
            hf_s = median_seconds(run_hf, max(1, args.repeats // 2))
        finally:
            engine.shutdown()

    engine_tps = statistics.median(engine_tokens) / engine_s
    hf_tps = statistics.median(hf_tokens) / hf_s
    print(f"model: hidden {args.hidden}, {args.layers} layers, {num_bytes / 1e6:.1f} MB fp32, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"weight sync : {sync_s * 1e3:8.2f} ms  {num_bytes / sync_s / 1e9:6.2f} GB/s "
          f"(bucket {args.bucket_mb:g} MiB)")
    print(f"memory copy : {copy_s * 1e3:8.2f} ms  {num_bytes / copy_s / 1e9:6.2f} GB/s")
    print(f"ratio sync/copy time: {sync_s / copy_s:.1f}x")
    print(f"generate    : engine {engine_tps:8.0f} tok/s, transformers {hf_tps:8.0f} tok/s "
          f"(batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new)")
    print(f"ratio engine/transformers tokens/s: {engine_tps / hf_tps:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
