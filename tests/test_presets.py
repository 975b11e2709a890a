"""Qwen3 size presets and the model-FLOPs formula used by benchmarks and MFU reports."""

import pytest

from megatron_uniapl.model.presets import (
    QWEN3_CONFIGS,
    qwen3_preset,
    training_flops_per_token,
)


@pytest.mark.parametrize(
    "size, tokens_s, tflops",
    # docs/platform_notes.md (H200, seq 4096, Megatron-Core rows): tokens/s and the model TFLOP/s it reports.
    [("0.6B", 59_141, 295), ("1.7B", 34_717, 407), ("4B", 15_501, 430), ("8B", 10_159, 498)],
)
def test_flops_formula_reproduces_benchmark_figures(size, tokens_s, tflops):
    reported = tflops * 1e12 / tokens_s
    assert training_flops_per_token(qwen3_preset(size), 4096) == pytest.approx(reported, rel=2e-3)


def test_hand_computed_flops_on_a_small_shape():
    from megatron_uniapl.model.hf_config import Qwen3Arch

    arch = Qwen3Arch(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=2, rms_norm_eps=1e-6, rope_theta=1e4,
                     max_position_embeddings=16, tie_word_embeddings=True)
    # per layer: q 4*4 + k,v 2*4*2 + o 4*4 + mlp 3*4*8 = 16+16+16+96 = 144; head 10*4 = 40
    # 6 * (144 + 40) + attention 6 * seq(3) * 4 = 1104 + 72
    assert training_flops_per_token(arch, 3) == 1176


def test_presets_parse_and_unknown_size():
    assert {qwen3_preset(n).tie_word_embeddings for n in ("0.6B", "1.7B", "4B")} == {True}
    assert not qwen3_preset("32B").tie_word_embeddings
    assert len(QWEN3_CONFIGS) == 6
    with pytest.raises(KeyError, match="unknown Qwen3 size '3B'"):
        qwen3_preset("3B")
