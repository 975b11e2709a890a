"""The rollout metrics of a step (metrics/rollouts.py) against hand-counted values."""

import pytest

from megatron_uniapl.algorithm.samples import rollout_samples
from megatron_uniapl.algorithm.sharded_scoring import score_rollouts
from megatron_uniapl.data.sample import CONSTRAINTS_KEY, FINISH_REASON_KEY, VERDICTS_KEY, Sample, SampleKind
from megatron_uniapl.data.stream import EncodedPrompt
from megatron_uniapl.metrics.rollouts import (
    constraint_pass_rates,
    equal_group_metrics,
    equal_groups_fraction,
    task_reward_metrics,
    truncation_metrics,
)
from megatron_uniapl.rollout.engine import Generation
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


def test_equal_groups_fraction():
    # Groups: 0 -> (1, 1) equal; 1 -> (0, 1); 2 -> (0, 0, 0) equal, given out of order.
    assert equal_groups_fraction([1, 1, 0, 0, 1, 0, 0], [0, 0, 2, 1, 1, 2, 2]) == 2 / 3
    assert equal_groups_fraction([0.5], [7]) == 1.0
    with pytest.raises(ValueError, match="2 values but 1 group ids"):
        equal_groups_fraction([0, 1], [0])


def test_equal_group_metrics_task_over_constrained_groups_disc_over_all():
    rollouts = [
        rollout(1.0, [LOWER], group=0, disc_score=0.2), rollout(1.0, [LOWER], group=0, disc_score=0.2),
        rollout(0.0, [LOWER], group=1, disc_score=0.1), rollout(1.0, [LOWER], group=1, disc_score=0.3),
        rollout(1.0, [], group=2, disc_score=0.4), rollout(1.0, [], group=2, disc_score=0.5),
    ]
    # Task: groups 0 (equal) and 1 (not); group 2 has no constraints. Disc: only group 0 equal.
    assert equal_group_metrics(rollouts, with_task=True, with_disc=True) == {
        "reward/equal_groups_frac": 0.5, "disc/equal_groups_frac": 1 / 3}
    assert equal_group_metrics(rollouts, with_task=False, with_disc=False) == {}
    assert equal_group_metrics(rollouts[4:], with_task=True, with_disc=False) == {}


def test_truncated_fraction_from_the_engine_finish_reason():
    rollouts = [rollout(1.0, [LOWER], meta={FINISH_REASON_KEY: r}) for r in ("stop", "length", "stop", "stop")]
    assert truncation_metrics(rollouts) == {"rollout/truncated_frac": 0.25}
    # Samples that record no finish reason are not counted either way.
    assert truncation_metrics(rollouts[:2] + [rollout(1.0, [LOWER])]) == {"rollout/truncated_frac": 0.5}
    assert truncation_metrics([rollout(1.0, [LOWER])]) == {}


def test_pass_rate_per_constraint_type_from_the_kept_verdicts():
    rollouts = [
        rollout(0.0, [NO_COMMA, LOWER], meta={VERDICTS_KEY: [True, False]}),
        rollout(1.0, [LOWER], meta={VERDICTS_KEY: [True]}),
        rollout(0.0, [NO_COMMA, NO_COMMA], meta={VERDICTS_KEY: [False, False]}),
        rollout(1.0, [], meta={VERDICTS_KEY: []}),
        rollout(1.0, [LOWER]),  # never scored: no verdicts, not counted
    ]
    assert constraint_pass_rates(rollouts) == {
        "reward/pass/change_case:english_lowercase": 0.5, "reward/pass/punctuation:no_comma": 1 / 3}
    with pytest.raises(ValueError, match="1 verdicts for 2 constraints"):
        constraint_pass_rates([rollout(0.0, [NO_COMMA, LOWER], meta={VERDICTS_KEY: [True]})])


def test_scoring_keeps_the_verdicts_the_reward_came_from():
    # Real checkers: "hello, world" is lowercase but has a comma.
    samples = [Sample([1], [2], SampleKind.ROLLOUT, group_id=0, response_text="hello, world",
                      meta={CONSTRAINTS_KEY: [NO_COMMA, LOWER]})]
    score_rollouts(samples, "strict_fraction")
    assert samples[0].rewards["task"] == 0.5 and samples[0].meta[VERDICTS_KEY] == [False, True]
    assert constraint_pass_rates(samples) == {
        "reward/pass/change_case:english_lowercase": 1.0, "reward/pass/punctuation:no_comma": 0.0}


def test_rollout_samples_record_the_finish_reason():
    prompts = [EncodedPrompt([5, 6], "p", None, [LOWER])]
    gens = [Generation(0, [7], [-0.1], "a", "stop"), Generation(0, [7, 8], [-0.1, -0.2], "a b", "length")]
    samples = rollout_samples(prompts, gens, group_offset=3)
    assert [s.meta[FINISH_REASON_KEY] for s in samples] == ["stop", "length"]
    assert truncation_metrics(samples) == {"rollout/truncated_frac": 0.5}
