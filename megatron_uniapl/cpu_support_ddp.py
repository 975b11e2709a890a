"""One more CUDA assumption of Megatron-Core 0.19's DDP, redirected on CPU-only machines.

`param_and_grad_buffer.start_grad_sync` asks for `torch.cuda.current_stream()` to wait on CUDA-graph
events before reducing gradients; on a machine without CUDA that call fails, so Megatron's DDP
cannot reduce gradients at all. Without CUDA there are no streams and no events to wait for, so a
stream whose waits are no-ops is exact. Like `cpu_support` (which this complements and should be
folded into), it does nothing when a CUDA device exists.
"""

from __future__ import annotations

import torch

from megatron_uniapl import cpu_support


class _HostStream:
    """Stands in for the current CUDA stream on the CPU: everything is already in order."""

    def wait_event(self, event) -> None:
        return None

    def wait_stream(self, stream) -> None:
        return None

    def synchronize(self) -> None:
        return None


_HOST_STREAM = _HostStream()


def enable() -> bool:
    """Patch `torch.cuda.current_stream` when the CPU support is active; True if patched."""
    if torch.cuda.is_available() or not cpu_support.enable():
        return False
    torch.cuda.current_stream = lambda *args, **kwargs: _HOST_STREAM  # type: ignore[assignment]
    return True
