"""Read a Hugging Face Qwen3 `config.json` into a validated, framework-neutral description.

This module is pure (no torch, no megatron): conversion, the rollout engine's checks and the
scaling arithmetic all need the architecture without building a model. Anything the Megatron
model here cannot reproduce exactly (sliding windows, RoPE scaling, biases, MoE) is refused with
an error that names the file and the field, instead of silently training a different model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM",)


class UnsupportedModelError(ValueError):
    """The checkpoint is not a Qwen3 dense model this project can build exactly."""


@dataclass(frozen=True)
class Qwen3Arch:
    """The architecture of a Qwen3 dense model, as Hugging Face describes it."""

    vocab_size: int
    """Rows of the embedding (and output) matrix, padded beyond the tokenizer's size."""
    hidden_size: int
    """Width of the residual stream."""
    intermediate_size: int
    """Width of each SwiGLU branch (gate and up) in the MLP."""
    num_layers: int
    """Number of transformer layers."""
    num_attention_heads: int
    """Query heads."""
    num_key_value_heads: int
    """Key/value heads (grouped-query attention: each serves heads/kv_heads query heads)."""
    head_dim: int
    """Channels per head; Qwen3 sets it explicitly (128), not hidden/heads."""
    rms_norm_eps: float
    """Epsilon of every RMSNorm, including the per-head q/k norms."""
    rope_theta: float
    """RoPE base frequency."""
    max_position_embeddings: int
    """Longest sequence the RoPE table is built for."""
    tie_word_embeddings: bool
    """Whether the output layer reuses the input embedding matrix (0.6B-4B do, 8B+ do not)."""

    @property
    def num_parameters(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        h, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        q = self.num_attention_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h + 2 * self.head_dim
        mlp = 3 * h * self.intermediate_size
        per_layer = attention + mlp + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embeddings + h


def _rope_theta(config: dict, where: str) -> float:
    # transformers >= 5 writes `rope_parameters`; older files carry `rope_theta` (+ `rope_scaling`).
    params = config.get("rope_parameters")
    scaling = config.get("rope_scaling")
    if isinstance(params, dict):
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in (None, "default"):
            raise UnsupportedModelError(f"{where}: rope_parameters.rope_type={rope_type!r} is not supported (only default RoPE)")
        if "rope_theta" in params:
            return float(params["rope_theta"])
    if scaling not in (None, {}):
        raise UnsupportedModelError(f"{where}: rope_scaling={scaling!r} is not supported (only default RoPE)")
    if "rope_theta" not in config:
        raise UnsupportedModelError(f"{where}: field 'rope_theta' (or rope_parameters.rope_theta) is missing")
    return float(config["rope_theta"])


def parse_qwen3_config(config: dict, where: str = "config.json") -> Qwen3Arch:
    """Validate a Hugging Face config dict and return the architecture. `where` names the source."""
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != "qwen3" or (architectures and architectures[0] not in SUPPORTED_ARCHITECTURES):
        raise UnsupportedModelError(
            f"{where}: model_type={model_type!r}, architectures={architectures!r}; only Qwen3 dense "
            f"models ({', '.join(SUPPORTED_ARCHITECTURES)}, model_type 'qwen3') are supported"
        )

    def need(field: str, kind=int):
        if field not in config or config[field] is None:
            raise UnsupportedModelError(f"{where}: required field {field!r} is missing")
        try:
            return kind(config[field])
        except (TypeError, ValueError):
            raise UnsupportedModelError(f"{where}: field {field!r}={config[field]!r} is not a {kind.__name__}") from None

    if config.get("attention_bias", False):
        raise UnsupportedModelError(f"{where}: attention_bias=true is not Qwen3 dense (no biases)")
    if config.get("use_sliding_window", False):
        raise UnsupportedModelError(f"{where}: use_sliding_window=true is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"{where}: hidden_act={config.get('hidden_act')!r}; Qwen3 uses 'silu'")

    heads = need("num_attention_heads")
    kv_heads = need("num_key_value_heads")
    hidden = need("hidden_size")
    head_dim = int(config.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise UnsupportedModelError(f"{where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    return Qwen3Arch(
        vocab_size=need("vocab_size"),
        hidden_size=hidden,
        intermediate_size=need("intermediate_size"),
        num_layers=need("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=need("rms_norm_eps", float),
        rope_theta=_rope_theta(config, where),
        max_position_embeddings=need("max_position_embeddings"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def load_qwen3_arch(hf_dir: str | Path) -> Qwen3Arch:
    """Read and validate `<hf_dir>/config.json`."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (is {hf_dir} a Hugging Face model directory?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnsupportedModelError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    return parse_qwen3_config(config, where=str(path))
