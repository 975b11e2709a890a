"""Run Megatron-Core on a machine without CUDA (tests, the CPU demo, conversion checks).

Megatron-Core assumes a CUDA device in a handful of places. When, and only when, no CUDA device
exists, `enable()` redirects exactly those places to the CPU:

1. `torch.cuda.current_device()` (rotary `inv_freq`, buffers, DDP grad buffers) -> the CPU device.
2. `torch.cuda.synchronize()` -> a no-op.
3. Factory calls with `device="cuda"`, `tensor.cuda()`, `.to("cuda")`, and `tensor.type()`
   string checks ("torch.cuda.FloatTensor", used by the optimizer and grad clipping to sort
   parameters) -> handled by a `TorchFunctionMode` that maps CUDA to CPU.
4. The model-parallel RNG tracker (`model_parallel_cuda_manual_seed`) -> backed by the CPU
   generator, with the same fork semantics as the CUDA tracker.

On a machine with CUDA, `enable()` does nothing at all: the GPU path never sees this module's
patches. Everything here is process-wide and idempotent.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger(__name__)

_enabled = False
_mode: TorchFunctionMode | None = None


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare integer is how Megatron passes `torch.cuda.current_device()`.
    return isinstance(device, int) and not isinstance(device, bool)


_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
    torch.uint8: "torch.cuda.ByteTensor",
    torch.bool: "torch.cuda.BoolTensor",
}


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to the CPU for every torch call made while active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron sorts parameters by these names; answer as CUDA would.
            return _TYPE_NAMES.get(args[0].dtype, func(*args))
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to,) and args and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


class _NullStream:
    """Stands in for the current CUDA stream: on the CPU every op is already ordered."""

    def wait_event(self, event) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def record_event(self, event=None):
        return event

    def synchronize(self) -> None:
        pass


class CPURNGStatesTracker:
    """The model-parallel RNG tracker of Megatron-Core, backed by the CPU generator.

    Same contract as `megatron.core.tensor_parallel.random.CudaRNGStatesTracker`: named states
    seeded once; `fork(name)` swaps the named state in, runs the block, saves it back and restores
    the previous state.
    """

    def __init__(self, *args, **kwargs):
        self.reset()

    def is_initialized(self) -> bool:
        return self._is_initialized

    def reset(self) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()
        self._is_initialized = False

    def get_states(self) -> dict[str, torch.Tensor]:
        return {name: state.clone() for name, state in self.states_.items()}

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = {name: state.clone() for name, state in states.items()}

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise RuntimeError(f"seed {seed} already exists")
        if name in self.states_:
            raise RuntimeError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        generator = torch.Generator().manual_seed(seed)
        self.states_[name] = generator.get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        if name not in self.states_:
            raise RuntimeError(f"rng state {name} is not added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def _install_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as mp_random

    def initialize_rng_tracker(*args, force_reset: bool = False, **kwargs):
        if force_reset or mp_random._CUDA_RNG_STATE_TRACKER is None or not isinstance(
            mp_random._CUDA_RNG_STATE_TRACKER, CPURNGStatesTracker
        ):
            mp_random._CUDA_RNG_STATE_TRACKER = CPURNGStatesTracker()
        mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    mp_random.initialize_rng_tracker = initialize_rng_tracker
    initialize_rng_tracker(force_reset=True)


def enable() -> bool:
    """Apply the CPU support if no CUDA device exists. Returns True when the CPU path is active."""
    global _enabled, _mode
    if torch.cuda.is_available():
        return False
    if _enabled:
        return True
    torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *args, **kwargs: None  # type: ignore[assignment]
    torch.cuda.current_stream = lambda *args, **kwargs: _NullStream()  # type: ignore[assignment]
    _mode = _CudaToCpuMode()
    _mode.__enter__()  # stays active for the life of the process
    _install_rng_tracker()
    _enabled = True
    logger.debug("Megatron-Core CPU support enabled (no CUDA device)")
    return True


def is_enabled() -> bool:
    """Whether the CPU support is active in this process."""
    return _enabled
