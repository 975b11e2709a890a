"""RMSNorm for the portable layer spec, usable with Megatron's sequence parallelism.

Megatron-Core's torch fallback norm (`WrappedTorchNorm`) asserts that sequence parallelism is
off, which is the only reason the portable spec could not run sequence parallel: with SP each
tensor-parallel rank normalizes its own slice of the sequence, so the norm weight's gradient is
a partial sum that must be all-reduced over the tensor-parallel group. Megatron does that in
`finalize_model_grads` for every parameter that carries the attribute `sequence_parallel=True`
(Transformer Engine's norms set it the same way); this norm sets it from the config. The q/k
norms, which act on heads rather than on the sequence, are reduced by Megatron by name
(`q_layernorm` / `k_layernorm`) whatever this attribute says.

Numerics follow Hugging Face's and vLLM's Qwen3 RMSNorm: normalize in float32, cast back to the
input dtype, then scale by the weight, so a bfloat16 trainer rounds where the engine rounds.
In float32 it computes exactly what `torch.nn.RMSNorm` computes.
"""

from __future__ import annotations

import torch


class RMSNorm(torch.nn.Module):
    """y = weight * (x / sqrt(mean(x^2) + eps)) over the last dimension.

    Built by Megatron's layer specs as `RMSNorm(config=..., hidden_size=..., eps=...)`.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-6, **_unused) -> None:
        super().__init__()
        if getattr(config, "normalization", "RMSNorm") != "RMSNorm":
            raise ValueError(f"RMSNorm built for normalization={config.normalization!r}")
        self.eps = eps
        device = None if config.use_cpu_initialization or not torch.cuda.is_available() else torch.cuda.current_device()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype, device=device))
        # Megatron all-reduces this gradient over the tensor-parallel group when SP is on.
        self.weight.sequence_parallel = bool(config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, sequence_parallel={self.weight.sequence_parallel}"
