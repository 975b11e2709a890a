"""Who generates what, with which seed, and who scores what (pure parts; the multi-rank paths run
in the recipe rehearsals of tests/test_rehearsal.py)."""

from __future__ import annotations

import pytest

from megatron_uniapl.algorithm.sharded_scoring import score_rollouts, shard_indices
from megatron_uniapl.config.rollout import MAX_SAMPLES_PER_PROMPT
from megatron_uniapl.rollout.engine_layout import EngineLayout
from megatron_uniapl.rollout.seeds import prompt_seed, prompt_seeds


@pytest.mark.parametrize("world,tp", [(8, 1), (8, 2), (8, 4), (8, 8), (32, 4), (4, 2), (1, 1)])
def test_every_prompt_is_served_by_exactly_one_engine_and_all_its_ranks(world, tp):
    prompts = 13
    layouts = [EngineLayout(tp, world, rank) for rank in range(world)]
    served: dict[int, set[int]] = {}
    for lay in layouts:
        for i in lay.prompt_indices(prompts):
            served.setdefault(i, set()).add(lay.replica)
        # all ranks of one engine send the same requests (vLLM's external launcher needs that)
        assert lay.prompt_indices(prompts) == layouts[lay.replica * tp].prompt_indices(prompts)
        assert lay.replica * tp <= lay.rank < (lay.replica + 1) * tp  # vLLM's consecutive blocks
    assert sorted(served) == list(range(prompts)) and all(len(e) == 1 for e in served.values())
    loads = [len(layouts[r * tp].prompt_indices(prompts)) for r in range(world // tp)]
    assert max(loads) - min(loads) <= 1
    groups = layouts[0].gather_ranks()  # one rank of every engine per group, every rank once
    assert sorted(r for g in groups for r in g) == list(range(world))
    assert all(sorted({r // tp for r in g}) == list(range(world // tp)) for g in groups)


def test_engine_tensor_parallelism_must_divide_the_world():
    with pytest.raises(ValueError, match="tensor_parallel_size=3 must divide the world size 8"):
        EngineLayout(3, 8, 0)


def test_seeds_never_share_a_stream_and_ignore_the_layout():
    group = 8
    seen = {}
    for step in range(5):
        for index in range(200):
            seed = prompt_seed(0, step, index)
            assert 0 <= seed < 2**62 and seed % MAX_SAMPLES_PER_PROMPT == 0
            for j in range(group):  # vLLM's child seeds
                assert seed + j not in seen, (step, index, j, seen.get(seed + j))
                seen[seed + j] = (step, index, j)
    assert prompt_seed(0, 2, 7) == prompt_seed(0, 2, 7) != prompt_seed(1, 2, 7)  # reproducible, run-seeded
    # the same global prompt gets the same seed whichever engine serves it
    two = EngineLayout(1, 2, 1).prompt_indices(6)
    four = EngineLayout(1, 4, 1).prompt_indices(6)
    assert prompt_seeds(0, 3, two)[0] == prompt_seeds(0, 3, four)[0] and two[0] == four[0] == 1
    with pytest.raises(ValueError, match="must be >= 0"):
        prompt_seed(0, -1, 0)


@pytest.mark.parametrize("world,collective", [(8, 1), (8, 2), (4, 4), (1, 1)])
def test_scoring_shares_cover_every_rollout_once_per_collective_group(world, collective):
    shares = [shard_indices(11, rank, world, collective) for rank in range(world)]
    blocks = [shares[b * collective] for b in range(world // collective)]
    assert sorted(i for share in blocks for i in share) == list(range(11))
    for rank in range(world):  # ranks of one collective group score the same share, together
        assert shares[rank] == shares[(rank // collective) * collective]
    with pytest.raises(ValueError, match="must divide the world size"):
        shard_indices(11, 0, 8, 3)


def test_one_rank_scores_everything_like_the_plain_scorer():
    from megatron_uniapl.algorithm.scoring import score_samples
    from megatron_uniapl.data.sample import CONSTRAINTS_KEY, Sample, SampleKind
    from megatron_uniapl.discriminator.overlap import OverlapF1Scorer
    from megatron_uniapl.rewards.registry import build_constraint

    def rollouts():
        lower = build_constraint("punctuation:no_comma", {}, "test")
        return [Sample([1], [2], SampleKind.ROLLOUT, group_id=i, prompt_text="p", reference_text="a b c",
                       response_text=text, meta={CONSTRAINTS_KEY: [lower]})
                for i, text in enumerate(["a b", "a, b", "a b c", "x"])]

    got, want = rollouts(), rollouts()
    score_rollouts(got, "strict", OverlapF1Scorer())
    score_samples(want, "strict")
    assert [s.rewards["task"] for s in got] == [s.rewards["task"] for s in want] == [1.0, 0.0, 1.0, 1.0]
    assert [s.disc_score for s in got] == pytest.approx(OverlapF1Scorer().score(
        ["p"] * 4, ["a b c"] * 4, [s.response_text for s in want]))
    orphan = rollouts()
    orphan[2].reference_text = None
    with pytest.raises(ValueError, match=r"rollouts \[2\] have no expert reference"):
        score_rollouts(orphan, "strict", OverlapF1Scorer())
