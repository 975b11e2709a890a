"""The Qwen3 Hugging Face <-> Megatron-Core mapping: names, fusions and tensor-parallel shards.

Pure functions over tensors (no I/O, no process groups). Used by `tools/convert_hf.py` and by the
live weight sync into the rollout engine, so that both move weights with one definition.

Layouts (h = hidden, n_q/n_kv = query/kv heads, d = head_dim, f = intermediate, t = TP size):
- `linear_qkv.weight` [(n_q + 2 n_kv) d, h] is grouped by query group: for each kv head g, the
  n_q/n_kv query heads it serves, then k_g, then v_g. A TP rank holds n_kv/t whole groups, so
  a TP shard is a contiguous block of the fused tensor.
- `linear_fc1.weight` [2 f, h] is [gate; up] *per TP rank*: rank r holds [gate_r; up_r].
- column-parallel tensors (embeddings, output layer) split dim 0, row-parallel ones
  (`linear_proj`, `linear_fc2`) split dim 1, norms are replicated.

Every function that takes HF tensors only slices them with `[a:b]` / `[:, a:b]`, so it also
accepts safetensors' lazy slice objects: a converter then reads one shard's bytes, not the whole
tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from megatron_uniapl.model.hf_config import Qwen3Arch

Kind = Literal["replicated", "column", "row", "qkv", "gate_up"]


@dataclass(frozen=True)
class TensorMap:
    """One Megatron parameter and the Hugging Face tensors it is made of."""

    megatron: str
    """Megatron name with the *global* layer index (`decoder.layers.{i}....`)."""
    hf: tuple[str, ...]
    """Hugging Face names, in the order the fusion expects (q, k, v) or (gate, up)."""
    kind: Kind
    """How the tensor is fused and split across tensor-parallel ranks."""
    export: bool = True
    """False for the tied output layer: HF stores it once, as the embedding."""


# Where the layer norms live differs between specs: the TE spec fuses them into the next linear.
_NORM_NAMES = {
    "portable": ("input_layernorm.weight", "pre_mlp_layernorm.weight"),
    "te": ("self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight"),
}


def layer_maps(layer: int, spec: str = "portable") -> list[TensorMap]:
    """The tensor maps of transformer layer `layer` (global index)."""
    mp, hp = f"decoder.layers.{layer}.", f"model.layers.{layer}."
    attn_norm, mlp_norm = _NORM_NAMES[spec]
    return [
        TensorMap(mp + attn_norm, (hp + "input_layernorm.weight",), "replicated"),
        TensorMap(
            mp + "self_attention.linear_qkv.weight",
            (hp + "self_attn.q_proj.weight", hp + "self_attn.k_proj.weight", hp + "self_attn.v_proj.weight"),
            "qkv",
        ),
        TensorMap(mp + "self_attention.q_layernorm.weight", (hp + "self_attn.q_norm.weight",), "replicated"),
        TensorMap(mp + "self_attention.k_layernorm.weight", (hp + "self_attn.k_norm.weight",), "replicated"),
        TensorMap(mp + "self_attention.linear_proj.weight", (hp + "self_attn.o_proj.weight",), "row"),
        TensorMap(mp + mlp_norm, (hp + "post_attention_layernorm.weight",), "replicated"),
        TensorMap(
            mp + "mlp.linear_fc1.weight", (hp + "mlp.gate_proj.weight", hp + "mlp.up_proj.weight"), "gate_up"
        ),
        TensorMap(mp + "mlp.linear_fc2.weight", (hp + "mlp.down_proj.weight",), "row"),
    ]


def embedding_map() -> TensorMap:
    return TensorMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "column")


def final_norm_map() -> TensorMap:
    return TensorMap("decoder.final_layernorm.weight", ("model.norm.weight",), "replicated")


def output_map(arch: Qwen3Arch) -> TensorMap:
    if arch.tie_word_embeddings:
        return TensorMap("output_layer.weight", ("model.embed_tokens.weight",), "column", export=False)
    return TensorMap("output_layer.weight", ("lm_head.weight",), "column")


def all_maps(arch: Qwen3Arch, spec: str = "portable") -> list[TensorMap]:
    """Every tensor of the model, in HF checkpoint order (embedding, layers, norm, head)."""
    maps = [embedding_map()]
    for layer in range(arch.num_layers):
        maps += layer_maps(layer, spec)
    return maps + [final_norm_map(), output_map(arch)]


def expected_hf_shapes(arch: Qwen3Arch) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a Hugging Face Qwen3 checkpoint of `arch` must hold."""
    h, d, f = arch.hidden_size, arch.head_dim, arch.intermediate_size
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, h), "model.norm.weight": (h,)}
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.k_norm.weight": (d,),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
        })
    if not arch.tie_word_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, h)
    return shapes


def _block(n: int, rank: int, size: int) -> slice:
    per = n // size
    return slice(rank * per, (rank + 1) * per)


def to_megatron_shard(kind: Kind, hf: list, arch: Qwen3Arch, tp_rank: int = 0, tp_size: int = 1) -> torch.Tensor:
    """The tensor-parallel shard `tp_rank` of one Megatron parameter, from its HF tensors.

    `hf` holds tensors (or lazy slices) in the order of `TensorMap.hf`.
    """
    if kind == "replicated":
        return hf[0][:]
    if kind == "column":
        return hf[0][_block(hf_rows(hf[0]), tp_rank, tp_size)]
    if kind == "row":
        cols = _block(hf_cols(hf[0]), tp_rank, tp_size)
        return hf[0][:, cols]
    if kind == "gate_up":
        rows = _block(arch.intermediate_size, tp_rank, tp_size)
        return torch.cat([hf[0][rows], hf[1][rows]], dim=0)
    if kind == "qkv":
        d, h = arch.head_dim, arch.hidden_size
        groups = arch.num_key_value_heads // tp_size
        heads_per_group = arch.num_attention_heads // arch.num_key_value_heads
        g0 = tp_rank * groups
        q = hf[0][g0 * heads_per_group * d:(g0 + groups) * heads_per_group * d]
        k = hf[1][g0 * d:(g0 + groups) * d]
        v = hf[2][g0 * d:(g0 + groups) * d]
        fused = torch.cat(
            [q.reshape(groups, heads_per_group * d, h), k.reshape(groups, d, h), v.reshape(groups, d, h)], dim=1
        )
        return fused.reshape(-1, h)
    raise ValueError(f"unknown tensor kind {kind!r}")


def hf_rows(t) -> int:
    return t.get_shape()[0] if hasattr(t, "get_shape") else t.shape[0]


def hf_cols(t) -> int:
    return t.get_shape()[1] if hasattr(t, "get_shape") else t.shape[1]


def from_megatron_shards(kind: Kind, shards: list[torch.Tensor], arch: Qwen3Arch) -> list[torch.Tensor]:
    """The full HF tensors (order of `TensorMap.hf`) from all tensor-parallel shards of one parameter."""
    if kind == "replicated":
        return [shards[0]]
    if kind == "column":
        return [torch.cat(shards, dim=0)]
    if kind == "row":
        return [torch.cat(shards, dim=1)]
    if kind == "gate_up":
        halves = [s.chunk(2, dim=0) for s in shards]
        return [torch.cat([g for g, _ in halves], dim=0), torch.cat([u for _, u in halves], dim=0)]
    if kind == "qkv":
        d, h = arch.head_dim, arch.hidden_size
        heads_per_group = arch.num_attention_heads // arch.num_key_value_heads
        qs, ks, vs = [], [], []
        for shard in shards:
            grouped = shard.reshape(-1, (heads_per_group + 2) * d, h)
            q, k, v = grouped.split([heads_per_group * d, d, d], dim=1)
            qs.append(q.reshape(-1, h))
            ks.append(k.reshape(-1, h))
            vs.append(v.reshape(-1, h))
        return [torch.cat(qs), torch.cat(ks), torch.cat(vs)]
    raise ValueError(f"unknown tensor kind {kind!r}")
