"""Dynamic sampling: roll out more prompts than a step trains on, keep the groups that teach.

With binary rewards and a few samples per prompt, many groups come back all right or all wrong;
their group-normalized task advantage is 0, so they add tokens to the step but no task gradient,
and the step's effective batch shrinks as the policy gets better (or stays bad). Rolling out
extra prompts and keeping the groups whose rewards differ keeps the batch informative; keeping
exactly `keep` groups (filling up with equal ones when too few differ) keeps its size, and so
the token counts, the step time and the reduction's denominators, steady.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.advantages import distinct_by_group


def select_groups(rollouts: Sequence[Sample], keep: int, reward_key: str = "task") -> tuple[list[Sample], dict[str, float]]:
    """The rollouts of `keep` groups: those whose `rewards[reward_key]` differ first, then equal
    ones, each kind in the order the groups first appear; the kept samples stay in their order.

    Returns (kept rollouts, metrics): `rollout/dynamic_sampled_groups` (groups rolled out) and
    `rollout/dynamic_varied_frac` (the share of them whose rewards differ). ValueError when there
    are fewer than `keep` groups or a rollout lacks the reward.
    """
    for i, s in enumerate(rollouts):
        if s.kind != SampleKind.ROLLOUT:
            raise ValueError(f"sample {i} is a {s.kind.value}, not a rollout")
        if reward_key not in s.rewards:
            raise ValueError(f"rollout {i} has no reward {reward_key!r} to select its group by")
    values = distinct_by_group([s.rewards[reward_key] for s in rollouts], [s.group_id for s in rollouts])
    order = list(values)
    if len(order) < keep:
        raise ValueError(f"{len(order)} rollout groups, fewer than the {keep} to keep")
    varied = [g for g in order if len(values[g]) > 1]
    equal = [g for g in order if len(values[g]) == 1]
    chosen = set((varied + equal)[:keep])
    kept = [s for s in rollouts if s.group_id in chosen]
    return kept, {"rollout/dynamic_sampled_groups": float(len(order)),
                  "rollout/dynamic_varied_frac": len(varied) / len(order) if order else 0.0}
