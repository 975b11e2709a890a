"""What a step's rollouts say about whether RL can learn from them, as pure functions of `Sample`s.

The task reward is a mean over rollouts whose prompt carries constraints: an empty constraint
list scores 1.0 (nothing was asked, rewards/reward.py), so A-SFT's rollouts, which answer
demonstration prompts without constraints, would otherwise log a perfect reward that says
nothing. Their share is logged instead (`reward/unconstrained_frac`).
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.data.sample import CONSTRAINTS_KEY, Sample


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
