"""What a run needs from the machine's GPU, checked before anything starts.

Without this, a GPU recipe on a machine where CUDA does not work (a CPU-only torch, no driver, a
driver older than torch's CUDA needs, no visible device) would quietly take the CPU path: gloo
and the Megatron-Core CPU support. Settings that only make sense on a GPU therefore refuse to
start unless CUDA is usable, and say what is missing:

    train.device=cuda, model.spec=te, model.fp8, discriminator.frozen.device=cuda

`diagnose` (pure) turns the facts into one sentence; `cuda_status` gathers the facts;
`check_run` is what the trainer calls first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MIN_DRIVER = {13: 580, 12: 525, 11: 450}
"""Oldest Linux driver branch that runs a CUDA major version (NVIDIA's minor-version
compatibility: any 13.x runtime runs on a >= 580 driver, any 12.x on >= 525)."""

FP8_MIN_CAPABILITY = (8, 9)
"""FP8 GEMMs in Transformer Engine: Ada (8.9), Hopper (9.0) and newer."""

MXFP8_MIN_CAPABILITY = (10, 0)
"""MXFP8 (block-scaled FP8) in Transformer Engine: Blackwell (10.0) and newer."""

DRIVER_FILE = Path("/proc/driver/nvidia/version")
"""Where the loaded NVIDIA kernel module reports its version on Linux."""


class DeviceError(RuntimeError):
    """The run asks for something this machine's GPU set-up cannot give; the message says what."""


@dataclass(frozen=True)
class CudaStatus:
    """What torch and the machine say about CUDA. `problem` is None when CUDA is usable."""

    torch_version: str
    torch_cuda: str | None
    """CUDA version torch was built with; None for a CPU-only build."""
    driver: str | None
    """Version of the loaded NVIDIA kernel driver; None when none is loaded (or not Linux)."""
    device_count: int
    name: str | None
    """Name of device 0."""
    capability: tuple[int, int] | None
    """Compute capability of device 0."""
    arch_list: tuple[str, ...]
    """GPU architectures torch was compiled for (sm_XY, compute_XY)."""
    problem: str | None

    @property
    def usable(self) -> bool:
        return self.problem is None


def min_driver(torch_cuda: str | None) -> int | None:
    """The oldest driver branch for torch's CUDA version (None when unknown)."""
    if not torch_cuda:
        return None
    return MIN_DRIVER.get(int(torch_cuda.split(".")[0]))


def driver_version(path: Path = DRIVER_FILE) -> str | None:
    """The loaded NVIDIA driver's version, e.g. "580.65.06", from the kernel module's report."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts) and int(parts[0]) >= 100:
            return word
    return None


def arch_supported(capability: tuple[int, int], arch_list: tuple[str, ...]) -> bool:
    """Whether code compiled for `arch_list` runs on a GPU of `capability`: a binary for sm_XY runs
    on the same major version with an equal or higher minor; PTX (compute_XY) is compiled at load
    for any GPU at least as new."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.rstrip("af").isdigit():
            continue
        digits = digits.rstrip("af")
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and built[0] == major and built[1] <= minor:
            return True
        if kind == "compute" and built <= (major, minor):
            return True
    return not arch_list  # torch did not say: do not guess


def diagnose(torch_version: str, torch_cuda: str | None, available: bool, init_error: str | None,
             driver: str | None, visible_devices: str | None, capability: tuple[int, int] | None = None,
             name: str | None = None, arch_list: tuple[str, ...] = ()) -> str | None:
    """One sentence saying why CUDA is not usable, or None when it is. Pure: the facts come in."""
    if torch_cuda is None:
        return (f"torch {torch_version} is a CPU-only build (torch.version.cuda is None); "
                f"install the GPU environment (scripts/setup_gpu_env.sh)")
    need = min_driver(torch_cuda)
    needs = f"torch {torch_version} is built with CUDA {torch_cuda}" + (f", which needs NVIDIA driver >= {need}" if need else "")
    if not available:
        error = init_error or ""
        if driver is not None and need is not None and int(driver.split(".")[0]) < need:
            return f"the NVIDIA driver {driver} is too old: {needs}"
        if "too old" in error:
            return f"the NVIDIA driver{' ' + driver if driver else ''} is too old: {needs}"
        if visible_devices is not None and visible_devices.strip() in ("", "-1", "none", "NoDevFiles"):
            return f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={visible_devices!r})"
        if driver is None and ("driver" in error.lower() or not error):
            return f"no NVIDIA driver is loaded ({needs})"
        return f"no usable CUDA device (driver {driver or 'unknown'}; torch says: {error or 'not available'})"
    if capability is not None and not arch_supported(capability, arch_list):
        sm = f"sm_{capability[0]}{capability[1]}"
        return (f"this GPU ({name or 'device 0'}, {sm}) is not among the architectures torch {torch_version} "
                f"was compiled for ({', '.join(arch_list)})")
    return None


def cuda_status() -> CudaStatus:
    """Gather the facts from torch and the machine (initializes CUDA when it is available)."""
    import torch

    available = torch.cuda.is_available()
    init_error = None
    if not available and torch.version.cuda is not None:
        try:  # torch's own reason (no driver, driver too old, no device) is in the init error
            torch.cuda.init()
        except Exception as err:  # noqa: BLE001  (any failure here is the answer, not a crash)
            init_error = str(err).splitlines()[0] if str(err) else type(err).__name__
    count = torch.cuda.device_count() if available else 0
    capability = tuple(torch.cuda.get_device_capability(0)) if available else None
    name = torch.cuda.get_device_name(0) if available else None
    arch_list = tuple(torch.cuda.get_arch_list()) if available else ()
    driver = driver_version()
    problem = diagnose(torch.__version__, torch.version.cuda, available, init_error, driver,
                       os.environ.get("CUDA_VISIBLE_DEVICES"), capability, name, arch_list)
    return CudaStatus(torch.__version__, torch.version.cuda, driver, count, name, capability, arch_list, problem)


def te_problem() -> str | None:
    """Why Transformer Engine's PyTorch support cannot be used here, or None when it can."""
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as err:  # noqa: BLE001  (ImportError, or an OSError/RuntimeError from its libraries)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        hint = ""
        if "undefined symbol" in first or "transformer_engine_torch" in first:
            hint = (" (its PyTorch extension must be compiled against the installed torch: "
                    "scripts/setup_gpu_env.sh builds it without build isolation)")
        elif isinstance(err, ModuleNotFoundError):
            hint = " (install the GPU environment: scripts/setup_gpu_env.sh)"
        return f"Transformer Engine is not importable: {first}{hint}"
    return None


def fp8_problem(fp8: str | None, recipe: str, capability: tuple[int, int] | None, name: str | None = None) -> str | None:
    """Why this FP8 setting cannot run on a GPU of `capability`, or None. Pure."""
    if fp8 is None:
        return None
    if capability is None:
        return f"model.fp8={fp8!r} needs a CUDA GPU; none is usable"
    need, what = (MXFP8_MIN_CAPABILITY, "a Blackwell-class GPU") if recipe == "mxfp8" else (FP8_MIN_CAPABILITY, "an Ada/Hopper-class GPU")
    if tuple(capability) < need:
        gpu = f"{name} is" if name else "this GPU is"
        setting = f"model.fp8={fp8!r} with fp8_recipe={recipe!r}" if recipe == "mxfp8" else f"model.fp8={fp8!r}"
        return (f"{setting} needs {what} (compute capability >= {need[0]}.{need[1]}); "
                f"{gpu} {capability[0]}.{capability[1]}")
    return None


def require_cuda(what: str, status: CudaStatus | None = None) -> CudaStatus:
    """Raise DeviceError naming `what` and the missing piece unless CUDA is usable."""
    status = status or cuda_status()
    if status.problem is not None:
        raise DeviceError(f"{what} needs a usable CUDA GPU, but {status.problem}")
    return status


def gpu_settings(config) -> list[str]:
    """The settings of a run (a RunConfig) that only work on a GPU, as `section.field=value`."""
    found = []
    if getattr(config.train, "device", "auto") == "cuda":
        found.append("train.device=cuda")
    if config.model.spec == "te":
        found.append("model.spec=te")
    if config.model.fp8 is not None:
        found.append(f"model.fp8={config.model.fp8}")
    d = config.discriminator
    if d.kind == "frozen" and d.frozen is not None and str(d.frozen.device).startswith("cuda"):
        found.append(f"discriminator.frozen.device={d.frozen.device}")
    return found


def check_run(config, status: CudaStatus | None = None) -> CudaStatus | None:
    """Refuse a run whose GPU settings this machine cannot serve (DeviceError, one sentence).

    Returns the CUDA status when the run uses the GPU, None when it asks for nothing GPU-only.
    """
    settings = gpu_settings(config)
    if not settings:
        return None
    status = require_cuda(", ".join(settings), status)
    m = config.model
    if m.spec == "te" or m.fp8 is not None:
        problem = te_problem()
        if problem:
            raise DeviceError(f"{'model.spec=te' if m.spec == 'te' else 'model.fp8'} needs Transformer Engine, but {problem}")
    problem = fp8_problem(m.fp8, m.fp8_recipe, status.capability, status.name)
    if problem:
        raise DeviceError(problem)
    return status
