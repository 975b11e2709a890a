"""The published Qwen3 dense architectures (from their Hugging Face config.json files), so that
benchmarks and scaling arithmetic can use real shapes without downloading anything."""

from __future__ import annotations

from megatron_uniapl.model.hf_config import Qwen3Arch, parse_qwen3_config

_COMMON = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, head_dim=128,
    rms_norm_eps=1e-6, rope_theta=1000000, max_position_embeddings=40960, num_key_value_heads=8,
    attention_bias=False, hidden_act="silu",
)

QWEN3_CONFIGS: dict[str, dict] = {
    "0.6B": dict(_COMMON, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, tie_word_embeddings=True),
    "1.7B": dict(_COMMON, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16, tie_word_embeddings=True),
    "4B": dict(_COMMON, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, tie_word_embeddings=True),
    "8B": dict(_COMMON, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, tie_word_embeddings=False),
    "14B": dict(_COMMON, hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40, tie_word_embeddings=False),
    "32B": dict(_COMMON, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64, tie_word_embeddings=False),
}
"""HF config dicts of the Qwen3 dense family, keyed by size name."""


def qwen3_preset(name: str) -> Qwen3Arch:
    """The architecture of a named Qwen3 size ("0.6B" ... "32B")."""
    if name not in QWEN3_CONFIGS:
        raise KeyError(f"unknown Qwen3 size {name!r}; known: {', '.join(QWEN3_CONFIGS)}")
    return parse_qwen3_config(QWEN3_CONFIGS[name], where=f"preset {name}")


def training_flops_per_token(arch: Qwen3Arch, seq_len: int) -> float:
    """Model FLOPs of forward+backward per token: 6 x (non-embedding + LM-head parameters) plus
    causal attention (QK^T and AV: 12 * s * heads * head_dim per layer, halved by the causal mask)."""
    h = arch.hidden_size
    q = arch.num_attention_heads * arch.head_dim
    kv = arch.num_key_value_heads * arch.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * arch.intermediate_size
    dense = arch.num_layers * per_layer + arch.vocab_size * h  # the LM head's matmul counts always
    attention = arch.num_layers * 6 * seq_len * q
    return 6 * dense + attention

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "B200": 2250.0}
"""Dense bf16 datasheet peaks by device-name substring."""


def peak_tflops() -> float | None:
    import torch

    """The bf16 dense peak of the current GPU (None on a CPU or an unknown GPU)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
