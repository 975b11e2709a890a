"""What a step's rollouts say about whether RL can learn from them, as pure functions of `Sample`s.

The task reward is a mean over rollouts whose prompt carries constraints: an empty constraint
list scores 1.0 (nothing was asked, rewards/reward.py), so A-SFT's rollouts, which answer
demonstration prompts without constraints, would otherwise log a perfect reward that says
nothing. Their share is logged instead (`reward/unconstrained_frac`).

The other figures tell whether the policy-gradient terms have anything to learn from:
  - a group whose signal is all equal (every answer right, or every one wrong) has advantage 0
    and contributes no gradient: `reward/equal_groups_frac` (task reward) and
    `disc/equal_groups_frac` (discriminator score) are the shares of such groups;
  - `rollout/truncated_frac`: responses the engine cut at max_tokens (finish reason "length"),
    which cannot end their turn and usually fail their constraints for that reason alone;
  - `reward/pass/<instruction id>`: per constraint type, the share of its occurrences in the
    step's rollouts that the response followed (from the verdicts scoring kept), which shows
    which instructions the policy learns and which it does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.data.sample import (
    CONSTRAINTS_KEY,
    FINISH_REASON_KEY,
    VERDICTS_KEY,
    Sample,
)
from megatron_uniapl.losses.advantages import distinct_by_group


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def is_constrained(sample: Sample) -> bool:
    """Whether the sample's prompt asked for at least one checkable constraint."""
    return bool(sample.meta.get(CONSTRAINTS_KEY))


def task_reward_metrics(rollouts: Sequence[Sample], key: str = "task") -> dict[str, float]:
    """`reward/task_mean` over the constrained rollouts (absent when there are none) and
    `reward/unconstrained_frac`, the share of rollouts whose prompt has no constraint."""
    if not rollouts:
        return {}
    constrained = [s for s in rollouts if is_constrained(s)]
    out = {"reward/unconstrained_frac": 1.0 - len(constrained) / len(rollouts)}
    if constrained:
        out["reward/task_mean"] = _mean([s.rewards[key] for s in constrained])
    return out


def equal_groups_fraction(values: Sequence[float], group_ids: Sequence[int]) -> float:
    """Share of the groups whose values are all exactly equal (their normalized advantage is 0,
    see losses/advantages.py). Needs at least one value."""
    groups = distinct_by_group(values, group_ids)
    return sum(len(distinct) == 1 for distinct in groups.values()) / len(groups)


def equal_group_metrics(rollouts: Sequence[Sample], with_task: bool, with_disc: bool,
                        key: str = "task") -> dict[str, float]:
    """`reward/equal_groups_frac` over the constrained rollouts' groups (when `with_task` and
    there are any) and `disc/equal_groups_frac` over all groups (when `with_disc`)."""
    out = {}
    constrained = [s for s in rollouts if is_constrained(s)]
    if with_task and constrained:
        out["reward/equal_groups_frac"] = equal_groups_fraction(
            [s.rewards[key] for s in constrained], [s.group_id for s in constrained])
    if with_disc and rollouts:
        out["disc/equal_groups_frac"] = equal_groups_fraction(
            [s.disc_score for s in rollouts], [s.group_id for s in rollouts])
    return out


def truncation_metrics(rollouts: Sequence[Sample]) -> dict[str, float]:
    """`rollout/truncated_frac`: share of the rollouts whose engine finish reason is "length",
    over those that record one (absent when none does)."""
    reasons = [s.meta[FINISH_REASON_KEY] for s in rollouts if FINISH_REASON_KEY in s.meta]
    if not reasons:
        return {}
    return {"rollout/truncated_frac": sum(r == "length" for r in reasons) / len(reasons)}


def constraint_pass_rates(rollouts: Sequence[Sample]) -> dict[str, float]:
    """`reward/pass/<instruction id>`: per constraint type, followed / asked over the rollouts
    that kept their verdicts (a type asked twice in one prompt counts twice)."""
    asked: dict[str, int] = {}
    passed: dict[str, int] = {}
    for s in rollouts:
        verdicts = s.meta.get(VERDICTS_KEY)
        if verdicts is None:
            continue
        constraints = s.meta.get(CONSTRAINTS_KEY) or []
        if len(verdicts) != len(constraints):
            raise ValueError(f"{len(verdicts)} verdicts for {len(constraints)} constraints")
        for c, ok in zip(constraints, verdicts):
            asked[c.instruction_id] = asked.get(c.instruction_id, 0) + 1
            passed[c.instruction_id] = passed.get(c.instruction_id, 0) + bool(ok)
    return {f"reward/pass/{k}": passed[k] / asked[k] for k in sorted(asked)}
