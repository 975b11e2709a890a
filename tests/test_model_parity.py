"""Megatron-Core Qwen3 (portable SDPA spec) computes what transformers' Qwen3 computes, in float32:
logits, packed-sequence logits, the loss and every parameter gradient (TP=1, one process; the
tensor- and pipeline-parallel versions are in test_distributed.py)."""

import pytest
import torch
from parity_utils import hf_named_grads, hf_reference, lm_loss_fn, megatron_from_hf

from megatron_uniapl.model.packing import packed_seq_params, position_ids_from_lengths
from megatron_uniapl.model.pipeline import run_microbatches

LOGIT_TOL = 1e-4  # float32; observed ~2e-6 on logits of magnitude ~3
GRAD_TOL = 1e-5


def batch(seed=0, b=2, s=24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 151_000, (b, s), generator=g)
    return ids, torch.arange(s).unsqueeze(0).expand(b, -1)


@pytest.mark.parametrize("fixture", ["tiny_tied", "tiny_untied"])
def test_logits_loss_and_grads_match_hf(fixture, request, megatron_world):
    hf_dir = request.getfixturevalue(fixture)
    arch, model = megatron_from_hf(hf_dir)
    ids, pos = batch()
    ref_logits, ref_loss, ref_grads = hf_reference(hf_dir, ids)

    with torch.no_grad():
        logits = model(ids, pos, None)
    assert (logits - ref_logits).abs().max().item() < LOGIT_TOL

    # Two micro-batches through Megatron's schedule must give the one-batch loss and gradients.
    micro = [{"input_ids": ids[i:i + 1], "position_ids": pos[i:i + 1], "labels": ids[i:i + 1]} for i in range(2)]
    total = ids.shape[0] * (ids.shape[1] - 1)
    metrics = run_microbatches([model], micro, loss_fn=lm_loss_fn(total))
    loss = sum(m["nll_sum"] for m in metrics) / total
    assert abs(loss.item() - ref_loss.item()) < 1e-5

    grads = hf_named_grads(model, arch)
    assert set(grads) == set(ref_grads) | ({"lm_head.weight"} if not arch.tie_word_embeddings else set())
    for name, ref in ref_grads.items():
        diff = (grads[name] - ref).abs().max().item()
        assert diff < GRAD_TOL * max(1.0, ref.abs().max().item()), f"{name}: grad diff {diff:.2e}"


def test_packed_rows_equal_separate_samples(tiny_tied, megatron_world):
    """Three samples packed in one row: no attention across samples, positions restart."""
    from transformers import AutoModelForCausalLM

    _, model = megatron_from_hf(tiny_tied)
    hf = AutoModelForCausalLM.from_pretrained(tiny_tied, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    lengths = [7, 13, 4]
    samples = [torch.randint(0, 151_000, (n,), generator=g) for n in lengths]
    row = torch.cat(samples).unsqueeze(0)
    with torch.no_grad():
        packed = model(row, position_ids_from_lengths(lengths), None, packed_seq_params=packed_seq_params(lengths))
        start = 0
        for sample in samples:
            ref = hf(sample.unsqueeze(0)).logits[0]
            assert (packed[0, start:start + len(sample)] - ref).abs().max().item() < LOGIT_TOL
            start += len(sample)
        # The same row without packing metadata is *different* (later samples see earlier ones):
        # proof that the packed path is what isolates them.
        unpacked = model(row, torch.arange(row.shape[1]).unsqueeze(0), None)
        assert (unpacked[0, 7:] - packed[0, 7:]).abs().max().item() > 1e-2


def test_packed_backward_matches_separate(tiny_tied, megatron_world):
    _, model = megatron_from_hf(tiny_tied)
    lengths = [5, 9]
    g = torch.Generator().manual_seed(2)
    row = torch.randint(0, 151_000, (1, sum(lengths)), generator=g)
    out = model(row, position_ids_from_lengths(lengths), None, packed_seq_params=packed_seq_params(lengths))
    out.float().logsumexp(-1).sum().backward()
    packed_grad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for start, n in ((0, 5), (5, 9)):
        part = row[:, start:start + n]
        model(part, torch.arange(n).unsqueeze(0), None).float().logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(packed_grad[name], p.grad, rtol=1e-4, atol=1e-5), name


def test_wrong_mapping_is_caught(tiny_tied, megatron_world):
    """Guard for the parity tests themselves: swapping two heads' weights must break parity."""
    from transformers import AutoModelForCausalLM

    _, model = megatron_from_hf(tiny_tied)
    hf = AutoModelForCausalLM.from_pretrained(tiny_tied, dtype=torch.float32)
    qkv = model.decoder.layers[0].self_attention.linear_qkv.weight
    with torch.no_grad():
        qkv[[0, 32]] = qkv[[32, 0]]  # query head 0 <-> head 1 rows (head_dim 32)
        ids, pos = batch()
        assert (model(ids, pos, None) - hf(ids).logits).abs().max().item() > 1e-2
