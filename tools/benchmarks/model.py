"""Forward+backward throughput of the Megatron-Core Qwen3 against transformers' Qwen3.

Both models get the same shape, batch and dtype, in the same process, and are timed the same way
(median of N steps after warm-ups, full causal-LM loss). Prints tokens/s, model TFLOP/s, MFU
(GPU only; against the bf16 dense datasheet peak) and the Megatron/HF ratio.

    python tools/bench.py model                      # tiny, CPU
    python tools/bench.py model --sizes 0.6B 4B --seq 4096 --micro-batch 4 1   # on a GPU
"""

from __future__ import annotations

import argparse
import gc

import torch

from benchmarks._timing import median_seconds
from megatron_uniapl.model.presets import peak_tflops


def bench_shape(arch, seq: int, micro_batch: int, dtype: torch.dtype, warmup: int, steps: int) -> dict:
    from transformers import AutoModelForCausalLM, Qwen3Config

    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.presets import training_flops_per_token

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = torch.randint(0, 150_000, (micro_batch, seq), device=device)
    pos = torch.arange(seq, device=device).unsqueeze(0).expand(micro_batch, -1)
    results = {}

    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    model = build_qwen3_model(arch, ModelOptions(dtype=dtype_name, spec="portable"))

    def megatron_step():
        loss = model(ids, pos, None, labels=ids)  # per-token loss [b, s]
        loss.float().mean().backward()
        model.zero_grad(set_to_none=True)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    results["megatron"] = median_seconds(megatron_step, steps, warmup)
    results["megatron_mem"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    config = Qwen3Config(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, head_dim=arch.head_dim,
        tie_word_embeddings=arch.tie_word_embeddings, rope_theta=arch.rope_theta,
        max_position_embeddings=max(seq, arch.max_position_embeddings),
    )
    hf = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device)

    def hf_step():
        hf(ids, labels=ids).loss.backward()
        hf.zero_grad(set_to_none=True)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    results["hf"] = median_seconds(hf_step, steps, warmup)
    results["hf_mem"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    del hf
    gc.collect()

    tokens = micro_batch * seq
    flops = training_flops_per_token(arch, seq) * tokens
    peak = peak_tflops()
    for impl in ("megatron", "hf"):
        tflops = flops / results[impl] / 1e12
        results[f"{impl}_tokens_s"] = tokens / results[impl]
        results[f"{impl}_tflops"] = tflops
        results[f"{impl}_mfu"] = tflops / peak if peak else None
    results["ratio"] = results["hf"] / results["megatron"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", default=None, help="Qwen3 sizes (0.6B ... 32B); default: tiny on CPU, 0.6B and 4B on GPU")
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--micro-batch", type=int, nargs="*", default=None, help="one per size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)

    from megatron_uniapl import parallel
    from megatron_uniapl.model.hf_config import parse_qwen3_config
    from megatron_uniapl.model.presets import qwen3_preset
    from megatron_uniapl.model.tiny import tiny_qwen3_config

    parallel.initialize(1, 1)
    gpu = torch.cuda.is_available()
    sizes = args.sizes or (["0.6B", "4B"] if gpu else ["tiny"])
    seq = args.seq or (4096 if gpu else 256)
    micro = args.micro_batch or ([4, 1] if gpu and not args.sizes else [2] * len(sizes))
    dtype = torch.bfloat16 if gpu else torch.float32
    print(f"device: {torch.cuda.get_device_name() if gpu else 'cpu'}; seq {seq}; {dtype}; median of {args.steps}")
    print("| shape | impl | micro-batch | tokens/s | model TFLOP/s | MFU | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for size, mb in zip(sizes, micro):
        if size == "tiny":
            arch = parse_qwen3_config(tiny_qwen3_config().to_dict() | {"architectures": ["Qwen3ForCausalLM"]})
        else:
            arch = qwen3_preset(size)
        r = bench_shape(arch, seq, mb, dtype, args.warmup, args.steps)
        for impl, label in (("hf", "HF transformers, SDPA"), ("megatron", "Megatron-Core, SDPA core attention")):
            mfu = f"{100 * r[f'{impl}_mfu']:.1f}%" if r[f"{impl}_mfu"] else "n/a"
            mem = f"{r[f'{impl}_mem']:.1f}" if r[f"{impl}_mem"] is not None else "n/a"
            print(f"| {size} | {label} | {mb} | {r[f'{impl}_tokens_s']:,.0f} | {r[f'{impl}_tflops']:.3f} | {mfu} | {mem} |")
        print(f"| {size} | ratio Megatron/HF tokens/s | | {r['ratio']:.2f}x | | | |")
    parallel.destroy()
    return 0
