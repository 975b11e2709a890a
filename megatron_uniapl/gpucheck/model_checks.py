"""GPU checks of the model layer: they need torch and megatron-core on a GPU (TE only where named).

Each function takes its work directory, runs in its own process (see `registry`), raises when
the GPU path is wrong and returns its figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from megatron_uniapl.gpucheck.registry import ROOT

SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64)
"""A small Qwen3 whose matrices are still GPU-sized (and FP8-friendly: every dimension / 16)."""


def _hf_model_dir(workdir: Path, seed: int = 0) -> Path:
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    return create_tiny_qwen3(workdir / "hf", seed=seed, with_tokenizer=False, **SHAPE)


def _megatron(hf_dir: Path, **options):
    """A Megatron Qwen3 on this GPU filled with the HF weights (this rank's TP shard)."""
    from megatron.core import parallel_state

    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import load_qwen3_arch

    arch = load_qwen3_arch(hf_dir)
    opts = ModelOptions(**options)
    model = build_qwen3_model(arch, opts)
    with HFCheckpointReader(hf_dir) as reader:
        load_hf_into_model(model, reader, arch, parallel_state.get_tensor_model_parallel_rank(), opts.tensor_parallel)
    return arch, model


def _gathered_logits(model, ids: torch.Tensor, packed_lengths: list[int] | None = None) -> torch.Tensor:
    """Full-vocabulary logits [b, s, V] (gathered over tensor parallelism)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from megatron_uniapl.model.packing import (
        packed_seq_params,
        position_ids_from_lengths,
    )

    if packed_lengths is None:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
        logits = model(ids, pos, None)
    else:
        pos = position_ids_from_lengths(packed_lengths, device=ids.device)
        logits = model(ids, pos, None, packed_seq_params=packed_seq_params(packed_lengths, device=ids.device))
    return gather_from_tensor_model_parallel_region(logits)


def _loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _parity_bf16(workdir: Path, tensor_parallel: int, sequence_parallel: bool, spec: str) -> dict:
    """Megatron (this spec, bf16) against transformers (bf16, SDPA) on the same weights and batch."""
    from transformers import AutoModelForCausalLM

    from megatron_uniapl import parallel

    parallel.initialize(tensor_parallel, 1)
    hf_dir = _hf_model_dir(workdir) if torch.distributed.get_rank() == 0 else workdir / "hf"
    torch.distributed.barrier()
    _, model = _megatron(hf_dir, tensor_parallel=tensor_parallel, sequence_parallel=sequence_parallel,
                         dtype="bfloat16", spec=spec)
    torch.manual_seed(0)
    ids = torch.randint(0, 151_000, (2, 512), device="cuda")
    logits = _gathered_logits(model, ids)
    loss = _loss(logits, ids)
    loss.backward()
    grads_finite = all(torch.isfinite(p.main_grad if hasattr(p, "main_grad") else p.grad).all()
                       for p in model.parameters() if p.requires_grad and (p.grad is not None or hasattr(p, "main_grad")))
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    with torch.no_grad():
        ref = hf(ids).logits
    diff = (logits.detach().float() - ref.float()).abs()
    figures = {"spec": getattr(model, "uniapl_spec", spec), "max_abs_logit_diff": float(diff.max()),
               "mean_abs_logit_diff": float(diff.mean()), "loss": float(loss),
               "loss_diff": abs(float(loss) - float(_loss(ref, ids)))}
    parallel.destroy()
    if not grads_finite:
        raise FloatingPointError("non-finite gradients in the bf16 backward pass")
    if figures["mean_abs_logit_diff"] > 0.05 or figures["loss_diff"] > 0.05:
        raise AssertionError(f"bf16 logits differ from transformers: {figures}")
    return figures


def portable_bf16(workdir: Path) -> dict:
    """The portable (torch SDPA) spec in bf16 on one GPU against transformers, forward + backward."""
    return _parity_bf16(workdir, 1, False, "portable")


def _sequence_parallel_rank(workdir: Path, out: Path) -> None:
    import json

    figures = _parity_bf16(workdir, 2, True, "auto")
    if int(os.environ.get("RANK", "0")) == 0:
        out.write_text(json.dumps(figures))


def sequence_parallel(workdir: Path) -> dict:
    """TP=2 with sequence parallelism in bf16 (two ranks on two GPUs) against transformers."""
    import json

    from megatron_uniapl import parallel

    out = workdir / "figures.json"
    parallel.run_world(_sequence_parallel_rank, 2, workdir, out)
    return json.loads(out.read_text())


def packed_attention(workdir: Path) -> dict:
    """Three documents packed in one row give the logits of each document run alone (bf16)."""
    from megatron_uniapl import parallel

    parallel.initialize(1, 1)
    _, model = _megatron(_hf_model_dir(workdir), dtype="bfloat16", spec="auto")
    lengths = [211, 64, 377]  # odd total, documents of unequal length
    torch.manual_seed(1)
    docs = [torch.randint(0, 151_000, (1, n), device="cuda") for n in lengths]
    with torch.no_grad():
        packed = _gathered_logits(model, torch.cat(docs, dim=1), lengths)
        alone = torch.cat([_gathered_logits(model, d) for d in docs], dim=1)
    diff = (packed.float() - alone.float()).abs()
    figures = {"spec": model.uniapl_spec, "tokens": sum(lengths), "max_abs_diff": float(diff.max()),
               "mean_abs_diff": float(diff.mean())}
    parallel.destroy()
    if figures["mean_abs_diff"] > 0.02:
        raise AssertionError(f"packed rows leak across documents: {figures}")
    return figures


def offload_memory(workdir: Path) -> dict:
    """The trainer's gradients and optimizer state leave the GPU and come back bit for bit."""
    from megatron_uniapl import parallel
    from megatron_uniapl.colocation.megatron_state import (
        megatron_train_state,
        optimizer_tensors,
    )
    from megatron_uniapl.model.distributed import (
        OptimizerSettings,
        build_optimizer,
        train_step,
        wrap_ddp,
    )

    parallel.initialize(1, 1)
    _, model = _megatron(_hf_model_dir(workdir), dtype="bfloat16", spec="auto")
    settings = OptimizerSettings(lr=1e-4, use_distributed_optimizer=True)
    chunks = wrap_ddp([model], settings)
    optimizer, scheduler = build_optimizer(chunks, settings, total_steps=10)
    ids = torch.randint(0, 151_000, (1, 256), device="cuda")
    batch = {"input_ids": ids, "position_ids": torch.arange(256, device="cuda")[None]}

    def loss_fn(logits, b):
        from megatron.core import tensor_parallel

        nll = tensor_parallel.vocab_parallel_cross_entropy(logits[:, :-1].float().contiguous(), b["input_ids"][:, 1:].contiguous())
        return nll.mean(), torch.tensor(1), {}

    train_step(chunks, optimizer, [batch], loss_fn, scheduler)  # creates the Adam state
    state = megatron_train_state(chunks, optimizer)
    before_values = [t.detach().clone() for t in optimizer_tensors(optimizer)]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    moved = state.offload()
    off_s = time.perf_counter() - start
    during = torch.cuda.memory_allocated()
    start = time.perf_counter()
    state.onload()
    on_s = time.perf_counter() - start
    after = torch.cuda.memory_allocated()
    same = all(torch.equal(a, b) for a, b in zip(before_values, optimizer_tensors(optimizer)))
    figures = {"offloaded_mib": moved.num_bytes / 2**20, "freed_mib": (before - during) / 2**20,
               "restored_mib": (after - during) / 2**20, "offload_s": off_s, "onload_s": on_s}
    parallel.destroy()
    if before - during < moved.num_bytes or after != before or not same:
        raise AssertionError(f"offload did not free and restore the memory exactly (state equal: {same}): {figures}")
    return figures


def model_benchmark(workdir: Path) -> dict:
    """`tools/bench.py model` with its GPU defaults (Qwen3-0.6B and 4B shapes, sequence 4096)."""
    result = subprocess.run([sys.executable, "tools/bench.py", "model"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    (workdir / "bench.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"tools/bench.py model exited {result.returncode}: {result.stderr.strip().splitlines()[-1:]}")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "ratio" in line]
    figures = {row.split("|")[1].strip(): row.split("|")[4].strip() for row in rows}
    print(result.stdout, file=sys.stderr)  # the whole table goes to the check's log
    return {f"megatron/hf tokens/s {size}": ratio for size, ratio in figures.items()} | {"table": str(workdir / "bench.txt")}


def fp8_packed_row(workdir: Path) -> dict:
    """An FP8 (TE, e4m3) forward of a packed row whose documents add up to an odd length, padded
    as the trainer pads it (`ModelOptions.token_multiple`), against the bf16 forward."""
    from megatron_uniapl import parallel
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.data.packing import pack_samples
    from megatron_uniapl.data.sample import Sample, SampleKind

    parallel.initialize(1, 1)
    hf_dir = _hf_model_dir(workdir)
    torch.manual_seed(2)
    samples = [Sample(prompt_ids=torch.randint(0, 151_000, (p,)).tolist(), response_ids=torch.randint(0, 151_000, (r,)).tolist(),
                      kind=SampleKind.DEMO) for p, r in ((17, 40), (9, 33))]  # 99 tokens
    multiple = ModelOptions(fp8="e4m3").token_multiple
    mb = pack_samples(samples, 256, pad_to_multiple_of=multiple).micro_batches[0][0]
    ids = mb.input_ids.cuda()
    lengths = torch.diff(mb.cu_seqlens).tolist()
    out = {}
    for name, fp8 in (("bf16", None), ("fp8", "e4m3")):
        _, model = _megatron(hf_dir, dtype="bfloat16", spec="te", fp8=fp8)
        with torch.no_grad():
            out[name] = _gathered_logits(model, ids, lengths)[:, : mb.num_real_tokens].float()
        del model
    diff = (out["fp8"].log_softmax(-1) - out["bf16"].log_softmax(-1)).abs()
    figures = {"real_tokens": mb.num_real_tokens, "row": ids.shape[1], "max_abs_logprob_diff": float(diff.max()),
               "mean_abs_logprob_diff": float(diff.mean())}
    parallel.destroy()
    if not torch.isfinite(out["fp8"]).all():
        raise FloatingPointError(f"non-finite FP8 logits: {figures}")
    return figures
