"""Typed options for building a Qwen3 model on Megatron-Core: parallel layout and precision.

These describe *how* to run the architecture (which comes from the Hugging Face config); they are
the model section of a run's configuration and of the conversion tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""The dtypes a model runs in (names of torch dtypes; the configuration does not import torch)."""


def token_multiple(tensor_parallel: int, sequence_parallel: bool, fp8: str | None, fp8_recipe: str) -> int:
    """The sequence-length multiple a layout needs (see `ModelOptions.token_multiple`); also
    computed from a built model's TransformerConfig by the code that runs sequences through it."""
    multiple = tensor_parallel if sequence_parallel else 1
    if fp8:
        multiple *= 32 if fp8_recipe == "mxfp8" else 16
    return multiple


@dataclass
class ModelOptions:
    """How to build and parallelize the model."""

    tensor_parallel: int = 1
    """Tensor-parallel size: attention heads, MLP width and vocabulary are split over this many ranks."""
    pipeline_parallel: int = 1
    """Pipeline-parallel size: layers are split into this many consecutive stages."""
    virtual_pipeline_stages: int | None = None
    """Interleaved pipeline chunks per rank (None = plain 1F1B). Over gloo it needs
    batch_p2p_comm=False to be exact (docs/platform_notes.md); the training loop sets that."""
    context_parallel: int = 1
    """Context-parallel size (sequence split for attention); needs the Transformer Engine spec."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism: norms, residuals and dropout work on 1/TP of the sequence
    (activation memory), with TP > 1. Both specs support it (the portable one through its own
    RMSNorm). Packed micro-batches are then padded to a multiple of TP (`token_multiple`)."""
    spec: Literal["auto", "te", "portable"] = "auto"
    """Layer implementation: Transformer Engine ("te"), torch-SDPA portable ("portable"), or TE
    when importable and a GPU exists, else portable ("auto")."""
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    """Parameter and activation dtype. Tests and CPU parity use float32."""
    fp8: Literal["e4m3", "hybrid"] | None = None
    """FP8 GEMM format (Transformer Engine only; compute capability >= 8.9: Ada, Hopper and newer);
    None disables FP8."""
    fp8_recipe: Literal["delayed", "tensorwise", "blockwise", "mxfp8"] = "tensorwise"
    """FP8 scaling recipe passed to Transformer Engine; "mxfp8" needs compute capability >= 10.0
    (Blackwell)."""
    recompute_activations: bool = False
    """Recompute each layer's activations in the backward pass (full, uniform) to save memory."""
    use_cpu_initialization: bool = False
    """Allocate parameters on the CPU (conversion tools, CPU runs)."""
    perform_initialization: bool = True
    """Randomly initialize parameters; conversion turns it off because weights are loaded anyway."""
    init_std: float = 0.02
    """Standard deviation of the random initialization when no checkpoint is loaded."""

    @property
    def torch_dtype(self):
        """The `torch.dtype` of `dtype` (torch is imported here, not when the config loads)."""
        import torch

        return getattr(torch, self.dtype)

    @property
    def model_parallel_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.context_parallel

    @property
    def token_multiple(self) -> int:
        """Tokens of every packed micro-batch (and every other sequence the trainer runs) must be
        a multiple of this, or the layout fails at its first odd length:
        - sequence parallelism splits the sequence over the TP ranks (Megatron's embedding
          reduce-scatter asserts divisibility): a factor TP;
        - FP8 GEMMs need the product of an input's leading dimensions divisible by 8 and
          Megatron's FP8 alignment is 16 (32 for MXFP8; megatron.core.fp8_utils), and with SP
          that holds per rank, after the split: a further factor 16 or 32.
        The padding is a separate, fully masked segment, so it changes no loss (tested)."""
        return token_multiple(self.tensor_parallel, self.sequence_parallel, self.fp8, self.fp8_recipe)

    def validate(self) -> None:
        """Raise ValueError naming the field for settings that cannot work together."""
        for name in ("tensor_parallel", "pipeline_parallel", "context_parallel"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"model.dtype must be one of {sorted(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.spec not in ("auto", "te", "portable"):
            raise ValueError(f"model.spec must be 'auto', 'te' or 'portable', got {self.spec!r}")
        if self.sequence_parallel and self.tensor_parallel == 1:
            raise ValueError("model.sequence_parallel needs model.tensor_parallel > 1")
        if self.virtual_pipeline_stages is not None and self.pipeline_parallel == 1:
            raise ValueError("model.virtual_pipeline_stages needs model.pipeline_parallel > 1")
