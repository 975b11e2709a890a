"""Layer specs for Qwen3: Transformer Engine when available, a portable torch-SDPA spec otherwise.

One switch (`ModelOptions.spec`) picks the implementation; FP8 is decided here and nowhere else,
so that asking for FP8 without Transformer Engine or without a GPU new enough for the chosen FP8
recipe fails at build time with a clear message instead of deep inside a kernel (the messages
come from `megatron_uniapl.device`, which the trainer also checks before it starts).
"""

from __future__ import annotations

import copy
import logging

import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_uniapl import device
from megatron_uniapl.config.model import ModelOptions

logger = logging.getLogger(__name__)


def te_available() -> bool:
    """Whether Megatron-Core can use Transformer Engine in this environment."""
    from megatron.core.extensions.transformer_engine import HAVE_TE

    return bool(HAVE_TE)


def resolve_spec(options: ModelOptions) -> str:
    """'te' or 'portable' for these options, with clear errors for impossible combinations."""
    have_te = te_available()
    gpu = torch.cuda.is_available()
    spec = options.spec
    if spec == "auto":
        spec = "te" if (have_te and gpu) else "portable"
    if spec == "te" and not have_te:
        reason = device.te_problem() or "Megatron-Core could not load Transformer Engine"
        raise RuntimeError(f"model.spec='te' but {reason}; or use model.spec='portable'")
    if options.fp8 is not None:
        if spec != "te":
            raise RuntimeError(
                f"model.fp8={options.fp8!r} needs the Transformer Engine spec "
                f"(Transformer Engine {'is' if have_te else 'is not'} installed, spec resolved to {spec!r})"
            )
        capability = tuple(torch.cuda.get_device_capability()) if gpu else None
        problem = device.fp8_problem(options.fp8, options.fp8_recipe, capability)
        if problem:
            raise RuntimeError(problem)
    if spec == "portable" and options.context_parallel > 1:
        raise RuntimeError("model.context_parallel > 1 needs the Transformer Engine spec")
    return spec


def portable_layer_spec() -> ModuleSpec:
    """Megatron's local Qwen3-shaped layer (RMSNorm, q/k norm, SwiGLU) with SDPA core attention
    and our RMSNorm (model/norm.py), which, unlike Megatron's torch fallback, supports sequence
    parallelism. Checkpoint keys are unchanged (the norms hold one `weight` each)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_uniapl.model.norm import RMSNorm
    from megatron_uniapl.model.sdpa_attention import SDPAttention

    spec = copy.deepcopy(get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm"))
    layer = spec.submodules
    layer.input_layernorm = layer.pre_mlp_layernorm = RMSNorm
    attention = layer.self_attention.submodules
    attention.q_layernorm = attention.k_layernorm = RMSNorm
    attention.core_attention = SDPAttention
    return spec


def portable_block_spec(layer: ModuleSpec, num_layers: int):
    """The decoder block of the portable spec: `num_layers` layers and a final RMSNorm of ours
    (a bare layer spec would get Megatron's default final norm, which refuses SP)."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from megatron_uniapl.model.norm import RMSNorm

    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=RMSNorm)


def te_layer_spec() -> ModuleSpec:
    """Megatron's Transformer Engine layer (fused norm+linear, TE attention, FP8-capable)."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_with_transformer_engine_spec,
    )

    return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)


def layer_spec(options: ModelOptions) -> tuple[str, ModuleSpec]:
    """The resolved spec name and the layer spec to build with."""
    name = resolve_spec(options)
    return name, (te_layer_spec() if name == "te" else portable_layer_spec())
