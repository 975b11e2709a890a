"""Core attention for the portable layer spec: torch SDPA, grouped-query, packed sequences.

Megatron-Core's local `DotProductAttention` materializes the full [b, heads, s, s] score matrix in
fp32; at 4096 tokens that ran out of memory on a 141 GB H200 for Qwen3-0.6B (docs/platform_notes.md).
`scaled_dot_product_attention` dispatches to flash / memory-efficient kernels on GPUs, handles
grouped-query attention without materializing repeated K/V (`enable_gqa=True`), and runs with a
backward on the CPU, so one module serves the GPU without Transformer Engine, the CPU tests and
the CPU demo.

Packed sequences (several samples in one row, `PackedSeqParams(qkv_format="thd")`) are attended
one document at a time. docs/platform_notes.md: the loop costs 3.39 ms where a compiled flex_attention
block mask costs 3.11 ms on an H200, but flex_attention has no CPU backward; the loop is exact on
both, so it is the portable choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig


class SDPAttention(MegatronModule):
    """Drop-in `core_attention` submodule of Megatron's `SelfAttention`.

    Inputs follow Megatron's layouts: `[s, b, heads, head_dim]` ("sbhd"), or `[t, heads, head_dim]`
    ("thd", packed) when `packed_seq_params.qkv_format == "thd"`. Output: `[s, b, heads*head_dim]`
    or `[t, heads, head_dim]` (Megatron reshapes the packed output itself).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError(
                "context parallelism needs the Transformer Engine layer spec; the portable SDPA "
                "spec supports context_parallel_size=1 only"
            )
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp_size = pg_collection.tp.size()
        self.attn_mask_type = attn_mask_type
        self.num_heads = config.num_attention_heads // tp_size
        self.num_groups = config.num_query_groups // tp_size
        self.head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q: [b, np, sq, hn]; k, v: [b, ng, sk, hn] -> [b, np, sq, hn]."""
        causal = mask is None and self.attn_mask_type == AttnMaskType.causal
        dropout = self.dropout if self.training else 0.0
        if dropout > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                return F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                    scale=self.softmax_scale, enable_gqa=self.num_groups != self.num_heads,
                )
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
            scale=self.softmax_scale, enable_gqa=self.num_groups != self.num_heads,
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise ValueError("SDPAttention does not support an attention bias")
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            return self._forward_packed(query, key, value, packed_seq_params)

        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        mask = None
        if attention_mask is not None:
            # Megatron's masks are True where attention is *forbidden*; SDPA's the opposite.
            mask = ~attention_mask.bool()
        out = self._sdpa(q, k, v, mask)
        # [b, n, s, d] -> [s, b, n*d]
        return out.permute(2, 0, 1, 3).reshape(out.shape[2], out.shape[0], -1)

    def _forward_packed(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, params: PackedSeqParams
    ) -> torch.Tensor:
        """query: [t, np, hn]; key, value: [t, ng, hn] -> [t, np, hn], each document causal alone."""
        cu_q = params.cu_seqlens_q_padded if params.cu_seqlens_q_padded is not None else params.cu_seqlens_q
        cu_kv = params.cu_seqlens_kv_padded if params.cu_seqlens_kv_padded is not None else params.cu_seqlens_kv
        if cu_q is None or cu_kv is None:
            raise ValueError("packed attention needs cu_seqlens_q and cu_seqlens_kv")
        if not torch.equal(cu_q, cu_kv):
            raise ValueError("SDPAttention supports self-attention only (cu_seqlens_q == cu_seqlens_kv)")
        bounds = cu_q.tolist()
        out = torch.zeros_like(query)
        for start, end in zip(bounds[:-1], bounds[1:]):
            if end <= start:
                continue
            # [L, n, d] -> [1, n, L, d]
            q, k, v = (x[start:end].transpose(0, 1).unsqueeze(0) for x in (query, key, value))
            out[start:end] = self._sdpa(q, k, v, None).squeeze(0).transpose(0, 1)
        return out
