"""Reading HF Qwen3 configs: the real sizes parse, everything else is refused by name."""

import json

import pytest

from megatron_uniapl.model.hf_config import (
    UnsupportedModelError,
    load_qwen3_arch,
    parse_qwen3_config,
)

QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
    "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000, "max_position_embeddings": 40960, "tie_word_embeddings": True,
    "attention_bias": False, "hidden_act": "silu", "use_sliding_window": False, "rope_scaling": None,
}


def test_qwen3_4b_parameter_count():
    arch = parse_qwen3_config(QWEN3_4B)
    assert arch.head_dim == 128 and arch.num_key_value_heads == 8 and arch.tie_word_embeddings
    # Qwen3-4B is published as 4.02B parameters.
    assert arch.num_parameters == 4_022_468_096


def test_qwen3_32b_untied_parameter_count():
    cfg = dict(QWEN3_4B, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
               num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False)
    assert parse_qwen3_config(cfg).num_parameters == 32_762_123_264


def test_transformers5_rope_parameters():
    cfg = dict(QWEN3_4B)
    del cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    assert parse_qwen3_config(cfg).rope_theta == 5e5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "only Qwen3 dense"),
        ({"architectures": ["Qwen3MoeForCausalLM"]}, "only Qwen3 dense"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"attention_bias": True}, "attention_bias"),
        ({"num_key_value_heads": 7}, "not a multiple"),
        ({"hidden_size": None}, "'hidden_size' is missing"),
        ({"num_hidden_layers": "many"}, "'num_hidden_layers'='many' is not a int"),
    ],
)
def test_unsupported_configs_are_named(change, message):
    with pytest.raises(UnsupportedModelError, match=message) as info:
        parse_qwen3_config(dict(QWEN3_4B, **change), where="some/config.json")
    assert "some/config.json" in str(info.value)


def test_invalid_json_names_file_and_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": "qwen3",\n  oops\n}')
    with pytest.raises(UnsupportedModelError, match=r"config.json:3: invalid JSON"):
        load_qwen3_arch(tmp_path)


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_qwen3_arch(tmp_path)


def test_roundtrip_through_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B))
    assert load_qwen3_arch(tmp_path) == parse_qwen3_config(QWEN3_4B)
