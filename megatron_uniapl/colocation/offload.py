"""Moving the trainer's optimizer state and gradients out of device memory while vLLM generates.

Tensors are moved by storage, not by re-assigning Python references: each storage's bytes are
copied to host memory and the device storage is resized to zero, and on the way back it is
re-allocated and filled in place. Every tensor and view that pointed into that storage (Megatron's
`main_grad` views into its contiguous gradient buffer, optimizer state held by the optimizer's
own dicts) stays valid without the owner knowing; nothing has to be re-wired after onload.

While offloaded, the tensors must not be touched: their storage is empty, and reading it can
crash the process (no bounds check). The co-location state machine is what guarantees this.

When the training device already is the host (CPU runs), moving is pointless and skipped by
default; `skip_on_offload_device=False` runs the full mechanism anyway, which the tests use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in a torch optimizer's per-parameter state (e.g. Adam's moments and step)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def grad_tensors(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The `.grad` of each parameter that has one (for Megatron, pass its grad buffers instead)."""
    return [p.grad for p in params if p.grad is not None]


@dataclass
class MoveStats:
    """One offload or onload."""

    num_storages: int
    """Distinct storages moved (views of one storage move once)."""
    num_bytes: int
    """Bytes moved."""
    seconds: float
    """Wall time, device synchronized."""


@dataclass
class _Parked:
    storage: torch.UntypedStorage
    device: torch.device
    host: torch.Tensor  # uint8, the storage's bytes


def _byte_view(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _synchronize(devices: set[torch.device]) -> None:
    if any(d.type == "cuda" for d in devices):
        torch.cuda.synchronize()


class TensorOffloader:
    """Parks a group of device tensors in host memory and brings them back, storage by storage."""

    def __init__(
        self,
        tensors: Callable[[], Iterable[torch.Tensor]],
        name: str = "train_state",
        offload_device: str | torch.device = "cpu",
        pin_memory: bool | None = None,
        skip_on_offload_device: bool = True,
    ) -> None:
        """`tensors` is called at each offload (optimizer state appears lazily, at the first step).
        `pin_memory` None pins when CUDA is available (faster, asynchronous copies)."""
        self.tensors = tensors
        self.name = name
        self.offload_device = torch.device(offload_device)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.skip_on_offload_device = skip_on_offload_device
        self._parked: list[_Parked] | None = None

    @property
    def offloaded(self) -> bool:
        return self._parked is not None

    def _storages(self) -> list[torch.UntypedStorage]:
        seen: dict[tuple[str, int], torch.UntypedStorage] = {}
        for tensor in self.tensors():
            storage = tensor.untyped_storage()
            if storage.nbytes() == 0:
                continue
            if self.skip_on_offload_device and storage.device == self.offload_device:
                continue
            seen.setdefault((str(storage.device), storage.data_ptr()), storage)
        return list(seen.values())

    def offload(self) -> MoveStats:
        if self._parked is not None:
            raise RuntimeError(f"{self.name} is already offloaded")
        start = time.perf_counter()
        parked = []
        for storage in self._storages():
            source = _byte_view(storage)
            host = torch.empty(source.numel(), dtype=torch.uint8, device=self.offload_device,
                               pin_memory=self.pin_memory and self.offload_device.type == "cpu")
            host.copy_(source, non_blocking=self.pin_memory)
            parked.append(_Parked(storage, storage.device, host))
        devices = {p.device for p in parked}
        _synchronize(devices)  # the copies must land before the device memory is released
        for p in parked:
            p.storage.resize_(0)
        self._parked = parked
        stats = MoveStats(len(parked), sum(p.host.numel() for p in parked), time.perf_counter() - start)
        logger.debug("offloaded %s: %d storages, %.3f GB", self.name, stats.num_storages, stats.num_bytes / 1e9)
        return stats

    def onload(self) -> MoveStats:
        if self._parked is None:
            raise RuntimeError(f"{self.name} is not offloaded")
        start = time.perf_counter()
        parked, self._parked = self._parked, None
        for p in parked:
            p.storage.resize_(p.host.numel())
            _byte_view(p.storage).copy_(p.host, non_blocking=self.pin_memory)
        _synchronize({p.device for p in parked})
        stats = MoveStats(len(parked), sum(p.host.numel() for p in parked), time.perf_counter() - start)
        logger.debug("onloaded %s: %d storages, %.3f GB", self.name, stats.num_storages, stats.num_bytes / 1e9)
        return stats
