"""Packed-sequence inputs for the Megatron model: several samples in one row, no attention across.

Megatron's "thd" format: input ids [1, t] with t = sum of sample lengths, position ids restarting
at 0 for every sample, and cumulative lengths `cu_seqlens` [n + 1] marking sample boundaries.
RoPE and attention then treat every sample as if it were alone (tested against unpacked runs).
"""

from __future__ import annotations

import torch
from megatron.core.packed_seq_params import PackedSeqParams


def cu_seqlens_from_lengths(lengths: list[int], device=None) -> torch.Tensor:
    """[0, l0, l0+l1, ...] as int32 (what the attention kernels expect)."""
    out = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=device)
    out[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32, device=device), 0)
    return out


def position_ids_from_lengths(lengths: list[int], device=None) -> torch.Tensor:
    """[1, t] positions restarting at 0 for each sample."""
    return torch.cat([torch.arange(n, device=device) for n in lengths]).unsqueeze(0)


def packed_seq_params(lengths: list[int], device=None) -> PackedSeqParams:
    """`PackedSeqParams` for one row holding samples of the given lengths."""
    cu = cu_seqlens_from_lengths(lengths, device)
    longest = max(lengths)
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
    )
