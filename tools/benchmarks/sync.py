"""Megatron -> vLLM weight-sync benchmark: the trainer's live parameters into the co-located engine.

Three timings on the same model in the same process, each the median of `--repeats`:
- memory copy: `copy_` of the same bytes (the HF tensors the sync sends) into preallocated
  tensors, the floor any sync pays;
- stream: producing the HF-named buckets from the Megatron model (mapping, gathers; at TP=1
  mostly views, a fused QKV split and gate/up split);
- engine load: the same tensors pushed into the engine from memory (`update_weights`), i.e.
  vLLM's load path alone (layer-wise reload, the CPU backend's weight repacking);
- sync: the whole `sync_megatron_weights` (layout pre-check, stream, engine load, prefix-cache
  reset), which is what the co-location schedule pays per rollout.
Printed as ms, GB/s and ratios to the copy. One process, TP=1 (a tiny model on the CPU; GPU
shapes where a GPU with vLLM is available).

Usage: `python tools/bench.py sync [--hidden 256 --layers 4 --bucket-mb 64 --repeats 5]`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import torch

from benchmarks._timing import median_seconds


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench sync", description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random Qwen3")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers")
    parser.add_argument("--bucket-mb", type=float, default=64.0, help="sync bucket size (MiB)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--kv-cache-mb", type=int, default=64, help="KV cache on the CPU platform (MiB)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(argv or []))
    logging.basicConfig(level=logging.WARNING)
    from megatron_uniapl import parallel
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.config.rollout import VLLMEngineConfig
    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import load_qwen3_arch
    from megatron_uniapl.model.tiny import create_tiny_qwen3
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronSyncConfig,
        iter_model_buckets,
        sync_megatron_weights,
    )
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    heads = max(2, args.hidden // 32)
    bucket = int(args.bucket_mb * (1 << 20))
    parallel.initialize(1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_qwen3(
            tmp, hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=32,
        )
        arch = load_qwen3_arch(model_dir)
        model = build_qwen3_model(arch, ModelOptions(dtype="float32", spec="portable", perform_initialization=False))
        with HFCheckpointReader(model_dir) as reader:
            load_hf_into_model(model, reader, arch, 0, 1)
        engine = VLLMEngine(model_dir, VLLMEngineConfig(
            dtype="float32", kv_cache_memory_bytes=args.kv_cache_mb << 20, max_model_len=256, enforce_eager=True,
        ))
        try:
            sent = [t.clone() for b in iter_model_buckets([model], arch, bucket) for _, t in b]
            num_bytes = sum(t.numel() * t.element_size() for t in sent)
            targets = [torch.empty_like(t) for t in sent]
            [d.copy_(s) for d, s in zip(targets, sent)]  # warm-up: first touch of the targets' pages
            copy_s = median_seconds(lambda: [d.copy_(s) for d, s in zip(targets, sent)], args.repeats)
            stream_s = median_seconds(
                lambda: sum(len(b) for b in iter_model_buckets([model], arch, bucket)), args.repeats
            )
            config = MegatronSyncConfig(bucket_bytes=bucket)
            version = iter(range(1, 10**6))
            stats = sync_megatron_weights(engine, [model], arch, next(version), config)  # warm-up
            sync_s = median_seconds(lambda: sync_megatron_weights(engine, [model], arch, next(version), config),
                                  args.repeats)
            names = [n for b in iter_model_buckets([model], arch, bucket) for n, _ in b]
            load_s = median_seconds(
                lambda: engine.update_weights(list(zip(names, sent)), next(version), bucket_bytes=bucket), args.repeats
            )
        finally:
            engine.shutdown()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"model: hidden {args.hidden}, {args.layers} layers, {num_bytes / 1e6:.1f} MB fp32 in {stats.num_tensors} "
          f"tensors, {stats.num_buckets} buckets of <= {args.bucket_mb:g} MiB, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    for name, seconds in (("memory copy", copy_s), ("stream", stream_s), ("engine load", load_s), ("sync", sync_s)):
        print(f"{name:12s}: {seconds * 1e3:8.2f} ms  {num_bytes / seconds / 1e9:6.2f} GB/s")
    print(f"ratio to copy time: sync {sync_s / copy_s:.1f}x, stream {stream_s / copy_s:.1f}x, "
          f"engine load {load_s / copy_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
