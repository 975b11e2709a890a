"""The rollout metrics of a step (metrics/rollouts.py) against hand-counted values."""

import pytest

from megatron_uniapl.data.sample import CONSTRAINTS_KEY, Sample, SampleKind
from megatron_uniapl.metrics.rollouts import task_reward_metrics
from megatron_uniapl.rewards.registry import Constraint

NO_COMMA = Constraint("punctuation:no_comma")
LOWER = Constraint("change_case:english_lowercase")


def rollout(reward, constraints, group=0, **kw):
    return Sample([1], [2, 3], SampleKind.ROLLOUT, group_id=group, rewards={"task": reward},
                  meta={CONSTRAINTS_KEY: constraints, **kw.pop("meta", {})}, **kw)


def test_task_reward_counts_only_rollouts_whose_prompt_has_constraints():
    # Two constrained rollouts (rewards 0 and 1) and two without constraints that score a
    # vacuous 1.0: the mean is 0.5, not 0.75, and half the rollouts are unconstrained.
    rollouts = [rollout(0.0, [NO_COMMA]), rollout(1.0, [NO_COMMA, LOWER]), rollout(1.0, []), rollout(1.0, [])]
    assert task_reward_metrics(rollouts) == {"reward/task_mean": 0.5, "reward/unconstrained_frac": 0.5}
    # A-SFT: every prompt is a demonstration prompt without constraints: no task mean at all.
    assert task_reward_metrics([rollout(1.0, []), rollout(1.0, [])]) == {"reward/unconstrained_frac": 1.0}
    assert task_reward_metrics([rollout(0.25, [LOWER])]) == {"reward/task_mean": 0.25, "reward/unconstrained_frac": 0.0}
    assert task_reward_metrics([]) == {}
