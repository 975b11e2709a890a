"""The packed layout by hand, and the placement guarantees on random batches."""

import random

import pytest
import torch

from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample, SampleKind


def _demo(prompt, response, **kw):
    return Sample(prompt_ids=prompt, response_ids=response, kind=SampleKind.DEMO, **kw)


def _roll(prompt, response, group=0, adv=None, **kw):
    return Sample(
        prompt_ids=prompt,
        response_ids=response,
        kind=SampleKind.ROLLOUT,
        group_id=group,
        advantages=adv if adv is not None else {"task": 0.0},
        **kw,
    )


def test_layout_by_hand():
    demo = _demo([5, 6], [7, 8])
    roll = _roll(
        [9],
        [10, 11, 12],
        adv={"task": 0.5, "adv": -1.0},
        loss_mask=[1, 0, 1],
        rollout_logprobs=[-0.1, -0.2, -0.3],
    )
    packed = pack_samples([demo, roll], max_tokens_per_micro_batch=16)
    assert len(packed.micro_batches) == 1 and len(packed.micro_batches[0]) == 1
    mb = packed.micro_batches[0][0]
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3]]
    assert mb.cu_seqlens.tolist() == [0, 4, 8] and mb.cu_seqlens.dtype == torch.int32
    # Position p predicts token p+1 of the same sample; last position of each sample predicts nothing.
    assert mb.targets.tolist() == [[6, 7, 8, 0, 10, 11, 12, 0]]
    assert mb.sft_mask.tolist() == [[0, 1, 1, 0, 0, 0, 0, 0]]
    assert mb.rollout_mask.tolist() == [[0, 0, 0, 0, 1, 0, 1, 0]]
    assert mb.kind.tolist() == [[1, 1, 1, 1, 2, 2, 2, 2]]
    assert mb.advantages["task"].tolist() == [[0, 0, 0, 0, 0.5, 0, 0.5, 0]]
    assert mb.advantages["adv"].tolist() == [[0, 0, 0, 0, -1.0, 0, -1.0, 0]]
    torch.testing.assert_close(mb.rollout_logprobs, torch.tensor([[0, 0, 0, 0, -0.1, -0.2, -0.3, 0]]))
    assert (packed.num_sft_tokens, packed.num_rollout_tokens) == (2, 2)
    assert packed.term_counts() == {"sft": 2, "pg_task": 2, "pg_adv": 2, "kl": 2}


def test_padding_tail_is_its_own_segment():
    packed = pack_samples(
        [_demo([1, 2, 3], [4, 5, 6, 7])], max_tokens_per_micro_batch=16, pad_to_multiple_of=4
    )
    mb = packed.micro_batches[0][0]
    assert mb.input_ids.shape == (1, 8) and mb.num_real_tokens == 7
    assert mb.cu_seqlens.tolist() == [0, 7, 8]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 0]]
    assert mb.kind.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0]]
    assert mb.sft_mask.sum().item() == 4


def test_equal_sizes_pack_tightly():
    # 8 samples of 30 tokens, budget 64, 2 ranks: 4 per rank, 2 per micro-batch, no padding.
    samples = [_demo([1] * 10, [2] * 20) for _ in range(8)]
    packed = pack_samples(samples, max_tokens_per_micro_batch=64, dp_size=2)
    assert [len(r) for r in packed.micro_batches] == [2, 2]
    assert all(mb.input_ids.shape[1] == 60 for r in packed.micro_batches for mb in r)


def test_rank_with_too_few_samples_gets_an_empty_micro_batch():
    samples = [_demo([1] * 5, [2] * 5) for _ in range(3)]
    packed = pack_samples(samples, max_tokens_per_micro_batch=10, dp_size=2)
    assert [len(r) for r in packed.micro_batches] == [2, 2]
    empty = [mb for r in packed.micro_batches for mb in r if not mb.sample_indices]
    assert len(empty) == 1
    assert empty[0].input_ids.shape == (1, 1) and empty[0].sft_mask.sum() == 0 and empty[0].kind.sum() == 0


@pytest.mark.parametrize("dp_size,multiple", [(1, 1), (2, 1), (3, 8), (4, 4)])
def test_random_batches_keep_every_guarantee(dp_size, multiple):
    rng = random.Random(dp_size * 10 + multiple)
    samples = []
    for i in range(60):
        prompt = [rng.randrange(100) for _ in range(rng.randint(1, 20))]
        response = [rng.randrange(100) for _ in range(rng.randint(0, 40))]
        if i % 3:
            samples.append(_roll(prompt, response, group=i // 6, adv={"task": rng.gauss(0, 1)}))
        else:
            samples.append(_demo(prompt, response))
    budget = 96
    packed = pack_samples(samples, budget, dp_size=dp_size, pad_to_multiple_of=multiple)
    counts = [len(r) for r in packed.micro_batches]
    assert len(set(counts)) == 1 and len(counts) == dp_size
    seen = sorted(i for r in packed.micro_batches for mb in r for i in mb.sample_indices)
    assert seen == list(range(len(samples)))
    longest = max(s.num_tokens for s in samples)
    rank_tokens = [sum(mb.num_real_tokens for mb in r) for r in packed.micro_batches]
    assert max(rank_tokens) - min(rank_tokens) <= longest
    for r in packed.micro_batches:
        for mb in r:
            t = mb.input_ids.shape[1]
            assert t <= budget
            assert t - mb.num_real_tokens < multiple if mb.sample_indices else t == multiple
            assert mb.num_real_tokens == sum(samples[i].num_tokens for i in mb.sample_indices)
            assert mb.cu_seqlens[-1].item() == t
    demo_tokens = sum(len(s.response_ids) for s in samples if s.kind == SampleKind.DEMO)
    roll_tokens = sum(len(s.response_ids) for s in samples if s.kind == SampleKind.ROLLOUT)
    assert (packed.num_sft_tokens, packed.num_rollout_tokens) == (demo_tokens, roll_tokens)
    assert sum(mb.sft_mask.sum().item() for r in packed.micro_batches for mb in r) == demo_tokens
    assert sum(mb.rollout_mask.sum().item() for r in packed.micro_batches for mb in r) == roll_tokens


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="sample 1 has 12 tokens"):
        pack_samples([_demo([1], [2]), _demo([1] * 6, [2] * 6)], max_tokens_per_micro_batch=10)
    with pytest.raises(ValueError, match="sample 0 has an empty prompt"):
        pack_samples([_demo([], [2, 3])], max_tokens_per_micro_batch=10)
    with pytest.raises(ValueError, match="rollout sample 1 has advantages"):
        pack_samples([_roll([1], [2], adv={"task": 1.0}), _roll([1], [2], adv={"adv": 1.0})], 10)
    with pytest.raises(ValueError, match=r"rollout samples \[0\] have no rollout_logprobs but sample 1 has"):
        pack_samples([_roll([1], [2]), _roll([1], [2], rollout_logprobs=[-1.0])], 10)
    with pytest.raises(ValueError, match="multiple of pad_to_multiple_of"):
        pack_samples([_demo([1], [2])], max_tokens_per_micro_batch=10, pad_to_multiple_of=4)
