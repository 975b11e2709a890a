"""Dynamic sampling keeps a full batch of the groups that teach the task term."""

from __future__ import annotations

import pytest

from megatron_uniapl.algorithm.dynamic_sampling import select_groups
from megatron_uniapl.config import load_config
from megatron_uniapl.data.sample import Sample, SampleKind


def rollouts(rewards_by_group: list[list[float]]) -> list[Sample]:
    out = []
    for g, rewards in enumerate(rewards_by_group):
        for r in rewards:
            out.append(Sample([1, 2], [3], SampleKind.ROLLOUT, group_id=10 + g, rewards={"task": r}))
    return out


def test_groups_whose_rewards_differ_come_first_and_the_batch_stays_full():
    samples = rollouts([[1, 1], [0, 1], [0, 0], [1, 0], [0, 0.5]])
    kept, metrics = select_groups(samples, 2)
    assert [s.group_id for s in kept] == [11, 11, 13, 13]
    assert metrics == {"rollout/dynamic_sampled_groups": 5.0, "rollout/dynamic_varied_frac": 0.6}
    kept, _ = select_groups(samples, 4)  # 3 varied groups: the first equal one fills the batch
    assert [s.group_id for s in kept] == [10, 10, 11, 11, 13, 13, 14, 14]
    kept, metrics = select_groups(rollouts([[0, 0], [1, 1]]), 1)
    assert [s.group_id for s in kept] == [10, 10] and metrics["rollout/dynamic_varied_frac"] == 0.0


def test_bad_selections_are_refused():
    with pytest.raises(ValueError, match="2 rollout groups, fewer than the 3 to keep"):
        select_groups(rollouts([[0, 1], [1, 1]]), 3)
    no_reward = rollouts([[0, 1]])
    no_reward[1].rewards = {}
    with pytest.raises(ValueError, match="rollout 1 has no reward 'task'"):
        select_groups(no_reward, 1)
    with pytest.raises(Exception, match=r"rollout\.dynamic_sampling_prompts must be >= 0"):
        load_config("recipes/tiny_cpu.yaml", ["rollout.dynamic_sampling_prompts=-1"])
