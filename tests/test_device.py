"""GPU-only settings refuse to start without a usable GPU, and say what is missing.

The facts torch reports are faked here only where this machine cannot produce them (a GPU, a
driver); the messages, the order of the checks and the trainer's exit are the real code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_uniapl import device
from megatron_uniapl.config import load_config
from megatron_uniapl.device import DeviceError, arch_supported, diagnose, fp8_problem

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")  # torch 2.13.0+cu130's list


def test_diagnose_names_what_is_missing():
    assert diagnose("2.13.0+cpu", None, False, None, None, None) == (
        "torch 2.13.0+cpu is a CPU-only build (torch.version.cuda is None); "
        "install the GPU environment (scripts/setup_gpu_env.sh)")
    no_driver = "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU"
    assert diagnose("2.13.0", "13.0", False, no_driver, None, None) == (
        "no NVIDIA driver is loaded (torch 2.13.0 is built with CUDA 13.0, which needs NVIDIA driver >= 580)")
    # A 12.x-era driver under cu13 wheels: named with its version, whatever torch's wording.
    assert diagnose("2.13.0", "13.0", False, "some error", "570.124.06", None) == (
        "the NVIDIA driver 570.124.06 is too old: torch 2.13.0 is built with CUDA 13.0, which needs NVIDIA driver >= 580")
    too_old = "The NVIDIA driver on your system is too old (found version 12080)."
    assert diagnose("2.13.0", "13.0", False, too_old, None, None).startswith("the NVIDIA driver is too old: torch 2.13.0")
    assert diagnose("2.13.0", "13.0", False, "No CUDA GPUs are available", "580.65.06", "") == (
        "no CUDA device is visible (CUDA_VISIBLE_DEVICES='')")
    assert diagnose("2.13.0", "12.8", False, "odd", "560.35.03", "0") == (
        "no usable CUDA device (driver 560.35.03; torch says: odd)")
    assert diagnose("2.13.0", "13.0", True, None, "580.65.06", "0", (9, 0), "NVIDIA H200", ARCHS) is None
    assert diagnose("2.13.0", "13.0", True, None, "580.65.06", None, (7, 0), "Tesla V100", ARCHS) == (
        "this GPU (Tesla V100, sm_70) is not among the architectures torch 2.13.0 was compiled for "
        "(sm_75, sm_80, sm_86, sm_90, sm_100, sm_120)")


def test_arch_compatibility_rules():
    assert arch_supported((8, 9), ARCHS)          # Ada runs the sm_86 binary (same major)
    assert arch_supported((10, 3), ARCHS)         # B300 runs sm_100
    assert not arch_supported((7, 0), ARCHS)
    assert not arch_supported((8, 0), ("sm_86",))  # a newer minor does not run on an older one
    assert arch_supported((12, 0), ("sm_90", "compute_90"))  # PTX is compiled for newer GPUs
    assert arch_supported((9, 0), ("sm_90a",))


def test_fp8_needs_ada_or_hopper_and_mxfp8_needs_blackwell():
    assert fp8_problem(None, "tensorwise", None) is None
    assert fp8_problem("e4m3", "tensorwise", None) == "model.fp8='e4m3' needs a CUDA GPU; none is usable"
    assert fp8_problem("e4m3", "tensorwise", (8, 0), "NVIDIA A100") == (
        "model.fp8='e4m3' needs an Ada/Hopper-class GPU (compute capability >= 8.9); NVIDIA A100 is 8.0")
    assert fp8_problem("e4m3", "delayed", (8, 9)) is None
    # 8.9 and 9.0 pass the plain FP8 check but cannot run MXFP8.
    assert fp8_problem("e4m3", "mxfp8", (9, 0), "NVIDIA H200") == (
        "model.fp8='e4m3' with fp8_recipe='mxfp8' needs a Blackwell-class GPU (compute capability >= 10.0); "
        "NVIDIA H200 is 9.0")
    assert fp8_problem("hybrid", "mxfp8", (10, 0)) is None


def test_driver_version_from_the_kernel_module_report(tmp_path):
    report = tmp_path / "version"
    report.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:48 UTC 2025\n"
                      "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    assert device.driver_version(report) == "580.65.06"
    assert device.driver_version(tmp_path / "absent") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")
def test_status_on_this_machine_names_the_missing_driver():
    status = device.cuda_status()
    assert not status.usable and status.capability is None
    if torch.version.cuda is None:
        assert "CPU-only build" in status.problem
    elif status.driver is None:
        assert status.problem.startswith("no NVIDIA driver is loaded (torch ")


def _gpu_recipe(monkeypatch, tmp_path, name="recipes/qwen3_4b.yaml", overrides=()):
    for var in ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return load_config(ROOT / name, list(overrides))


def _fake_gpu(monkeypatch, capability, name):
    """torch answers as on a machine with one GPU of `capability` (this machine has none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(ARCHS))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(device, "driver_version", lambda path=None: "580.65.06")


def test_gpu_recipe_without_cuda_is_refused_naming_every_gpu_setting(monkeypatch, tmp_path):
    config = _gpu_recipe(monkeypatch, tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "driver_version", lambda path=None: None)
    monkeypatch.setattr(torch.cuda, "init", lambda: (_ for _ in ()).throw(RuntimeError("Found no NVIDIA driver on your system.")))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(DeviceError) as err:
        device.check_run(config)
    assert str(err.value) == (
        "train.device=cuda, model.spec=te, discriminator.frozen.device=cuda needs a usable CUDA GPU, but no "
        f"NVIDIA driver is loaded (torch {torch.__version__} is built with CUDA 13.0, which needs NVIDIA driver >= 580)")


def test_cpu_recipe_asks_for_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.check_run(load_config(ROOT / "recipes/tiny_cpu.yaml")) is None


def test_te_spec_on_a_gpu_without_transformer_engine(monkeypatch, tmp_path):
    config = _gpu_recipe(monkeypatch, tmp_path)
    _fake_gpu(monkeypatch, (9, 0), "NVIDIA H200")
    monkeypatch.setattr(device, "te_problem", lambda: "Transformer Engine is not importable: No module named 'transformer_engine'")
    with pytest.raises(DeviceError, match=r"^model.spec=te needs Transformer Engine, but Transformer Engine is not importable"):
        device.check_run(config)


def test_fp8_checks_come_after_cuda_and_te(monkeypatch, tmp_path):
    _fake_gpu(monkeypatch, (9, 0), "NVIDIA H200")
    monkeypatch.setattr(device, "te_problem", lambda: None)  # as if Transformer Engine were installed
    config = _gpu_recipe(monkeypatch, tmp_path, overrides=["model.fp8=e4m3", "model.fp8_recipe=mxfp8"])
    with pytest.raises(DeviceError, match=r"fp8_recipe='mxfp8' needs a Blackwell-class GPU .*NVIDIA H200 is 9.0$"):
        device.check_run(config)
    config = _gpu_recipe(monkeypatch, tmp_path, overrides=["model.fp8=e4m3"])
    status = device.check_run(config)
    assert status.usable and status.capability == (9, 0) and status.driver == "580.65.06"


def test_te_problem_here_names_the_missing_module():
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        problem = device.te_problem()
        assert problem.startswith("Transformer Engine is not importable: No module named 'transformer_engine'")
        assert "scripts/setup_gpu_env.sh" in problem
    else:
        pytest.skip("Transformer Engine is installed here")


def test_process_group_with_device_cuda_never_falls_back_to_gloo(monkeypatch):
    from megatron_uniapl import parallel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda *a, **k: pytest.fail("a process group was created"))
    with pytest.raises(DeviceError, match=r"^train.device=cuda needs a usable CUDA GPU, but torch .* is a CPU-only build"):
        parallel.init_process_group(device="cuda")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")
def test_trainer_cli_stops_a_gpu_recipe_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(UNIAPL_MODELS=str(tmp_path / "models"), UNIAPL_DATA=str(tmp_path / "data"), UNIAPL_RUNS=str(tmp_path / "runs"))
    result = subprocess.run([sys.executable, "-m", "megatron_uniapl.train", "--config", "recipes/qwen3_0p6b.yaml",
                             "logging.progress_bar=false"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: train.device=cuda, model.spec=te, discriminator.frozen.device=cuda needs a usable CUDA GPU, but ")
