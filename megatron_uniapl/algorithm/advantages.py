"""The adversarial signal: discriminator scores turned into advantages, two ways.

UniAPL's adversarial term is a SECOND policy-gradient term: the same clipped surrogate as the task
term, on the same rollout tokens, driven by A_adv = groupnorm(d), where d = D(prompt, reference,
response) scores how expert-like each response is. It is weighted by `lambda_adv` in the objective,
so its strength is set independently of the task reward and it cannot be drowned (or dominate)
through the scale of d. The ablation the paper compares against instead folds the score into the
reward, A_task = groupnorm(r + lambda_shape * d) ("joint", the paper's), and has no separate
term; `shape_norm="per_term"` uses groupnorm(r) + lambda_shape * groupnorm(d) instead, where lambda
is not cancelled by groups of equal reward (losses/advantages.py).

`assign_advantages` writes both into `Sample.advantages` ("task", "adv"), which is what packing
reads; the loss itself (`clipped_surrogate_term`) does not care where an advantage came from.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.config.objective import PolicyGradientConfig, StepWeights
from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.advantages import group_normalize, shaped_advantages

TASK = "task"
"""Advantage (and reward) key of the verifiable task signal."""
ADV = "adv"
"""Advantage key of the discriminator signal."""


def assign_advantages(
    samples: Sequence[Sample],
    weights: StepWeights,
    pg: PolicyGradientConfig,
    reward_key: str = TASK,
) -> None:
    """Fill `advantages["task"]` and/or `advantages["adv"]` of every rollout sample, in place.

    Only the signals the step uses are computed: "task" when 1 - mu > 0 (from
    `rewards[reward_key]`, shaped with `lambda_shape * disc_score` as `weights.shape_norm` says
    when lambda_shape > 0), "adv" when
    lambda_adv > 0 (from `disc_score`). Demonstrations are left untouched. Missing inputs raise
    ValueError naming the sample.
    """
    rollouts = [(i, s) for i, s in enumerate(samples) if s.kind == SampleKind.ROLLOUT]
    if not rollouts:
        return
    for i, s in rollouts:
        if s.group_id < 0:
            raise ValueError(f"rollout sample {i} has group_id {s.group_id}; rollouts must be grouped")
    groups = [s.group_id for _, s in rollouts]
    norm = dict(std_normalize=pg.std_normalize, eps=pg.adv_eps, ddof=pg.std_ddof)

    def scores() -> list[float]:
        missing = [i for i, s in rollouts if s.disc_score is None]
        if missing:
            raise ValueError(
                f"rollout samples {missing[:10]} have no disc_score but the step uses the discriminator"
            )
        return [float(s.disc_score) for _, s in rollouts]

    if weights.mu < 1.0:
        missing = [i for i, s in rollouts if reward_key not in s.rewards]
        if missing:
            raise ValueError(f"rollout samples {missing[:10]} have no reward {reward_key!r}")
        signal = [float(s.rewards[reward_key]) for _, s in rollouts]
        if weights.lambda_shape > 0:
            task = shaped_advantages(signal, scores(), groups, weights.lambda_shape, weights.shape_norm, **norm)
        else:
            task = group_normalize(signal, groups, **norm)
        for (_, s), a in zip(rollouts, task.tolist()):
            s.advantages[TASK] = a
    if weights.lambda_adv > 0:
        for (_, s), a in zip(rollouts, group_normalize(scores(), groups, **norm).tolist()):
            s.advantages[ADV] = a
