"""The pure Qwen3 HF <-> Megatron mapping, checked on hand-built tensors whose values name their
origin, so a wrong layout shows up as a wrong label, not just a numeric difference."""

import pytest
import torch

from megatron_uniapl.convert.qwen3 import (
    all_maps,
    expected_hf_shapes,
    from_megatron_shards,
    to_megatron_shard,
)
from megatron_uniapl.model.hf_config import Qwen3Arch

ARCH = Qwen3Arch(
    vocab_size=16, hidden_size=2, intermediate_size=4, num_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=1, rms_norm_eps=1e-6, rope_theta=1e6,
    max_position_embeddings=32, tie_word_embeddings=False,
)


def labelled(rows: int, cols: int, base: float) -> torch.Tensor:
    """Row r holds base + r in every column."""
    return (base + torch.arange(rows, dtype=torch.float32)).unsqueeze(1).repeat(1, cols)


def test_qkv_is_grouped_by_query_group():
    # 4 query heads (100..103), 2 kv heads: k = 200..201, v = 300..301, head_dim 1.
    q, k, v = labelled(4, 2, 100), labelled(2, 2, 200), labelled(2, 2, 300)
    fused = to_megatron_shard("qkv", [q, k, v], ARCH)
    # group 0: q heads 0,1 then k0, v0; group 1: q heads 2,3 then k1, v1
    assert fused[:, 0].tolist() == [100, 101, 200, 300, 102, 103, 201, 301]
    # TP=2: each rank holds one whole group, a contiguous block of the fused tensor.
    assert to_megatron_shard("qkv", [q, k, v], ARCH, 0, 2)[:, 0].tolist() == [100, 101, 200, 300]
    assert to_megatron_shard("qkv", [q, k, v], ARCH, 1, 2)[:, 0].tolist() == [102, 103, 201, 301]


def test_gate_up_is_fused_per_rank():
    gate, up = labelled(4, 2, 10), labelled(4, 2, 20)
    assert to_megatron_shard("gate_up", [gate, up], ARCH)[:, 0].tolist() == [10, 11, 12, 13, 20, 21, 22, 23]
    assert to_megatron_shard("gate_up", [gate, up], ARCH, 1, 2)[:, 0].tolist() == [12, 13, 22, 23]


def test_row_and_column_split_dimensions():
    w = torch.arange(8.0).reshape(2, 4)
    assert to_megatron_shard("row", [w], ARCH, 1, 2).tolist() == [[2, 3], [6, 7]]
    assert to_megatron_shard("column", [w.T.contiguous()], ARCH, 1, 2).tolist() == [[2, 6], [3, 7]]


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("kind", ["replicated", "column", "row", "qkv", "gate_up"])
def test_shards_round_trip_exactly(kind, tp):
    torch.manual_seed(0)
    shapes = {
        "replicated": [(2,)], "column": [(16, 2)], "row": [(2, 4)],
        "qkv": [(4, 2), (2, 2), (2, 2)], "gate_up": [(4, 2), (4, 2)],
    }[kind]
    hf = [torch.randn(s) for s in shapes]
    shards = [to_megatron_shard(kind, hf, ARCH, r, tp) for r in range(tp)]
    back = from_megatron_shards(kind, shards, ARCH)
    assert len(back) == len(hf)
    for a, b in zip(back, hf):
        assert torch.equal(a, b)


def test_maps_cover_every_hf_tensor_once():
    for tied in (False, True):
        arch = Qwen3Arch(**{**ARCH.__dict__, "tie_word_embeddings": tied})
        exported = [n for m in all_maps(arch) if m.export for n in m.hf]
        assert sorted(exported) == sorted(expected_hf_shapes(arch))
        assert len(exported) == len(set(exported))


def test_lazy_slices_are_read_partially(tmp_path):
    """The mapping accepts safetensors slices, so a TP rank reads only its rows."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    q, k, v = labelled(4, 2, 100), labelled(2, 2, 200), labelled(2, 2, 300)
    save_file({"q": q, "k": k, "v": v}, str(tmp_path / "m.safetensors"))
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        lazy = [f.get_slice(n) for n in "qkv"]
        shard = to_megatron_shard("qkv", lazy, ARCH, 1, 2)
    assert torch.equal(shard, to_megatron_shard("qkv", [q, k, v], ARCH, 1, 2))
