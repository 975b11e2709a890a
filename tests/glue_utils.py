"""Shared inputs for the Megatron glue tests: a mixed global batch with every UniAPL term active,
and the model/optimizer set-up used identically by the single-process reference and the workers."""

from __future__ import annotations

import random

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.config.objective import (
    ObjectiveConfig,
    PolicyGradientConfig,
    Stage,
)
from megatron_uniapl.config.schedule import MuSchedule
from megatron_uniapl.data.sample import Sample, SampleKind

TOKENS = 3000


def mixed_samples(
    seed: int = 0, demos: int = 4, groups: int = 2, group_size: int = 3, demo_seed: int | None = None
):
    """Demonstrations and grouped rollouts (rewards, discriminator scores, engine log-probs)."""
    rng = random.Random(seed)
    drng = random.Random(seed + 1000 if demo_seed is None else demo_seed)
    samples = []
    for _ in range(demos):
        samples.append(
            Sample(
                [drng.randrange(TOKENS) for _ in range(drng.randint(2, 6))],
                [drng.randrange(TOKENS) for _ in range(drng.randint(3, 9))],
                SampleKind.DEMO,
            )
        )
    for g in range(groups):
        prompt = [rng.randrange(TOKENS) for _ in range(rng.randint(2, 6))]
        for i in range(group_size):
            n = rng.randint(3, 9)
            mask = [1] * n
            mask[rng.randrange(n)] = 0  # a masked-out response token (e.g. a truncated tail)
            samples.append(
                Sample(
                    list(prompt),
                    [rng.randrange(TOKENS) for _ in range(n)],
                    SampleKind.ROLLOUT,
                    group_id=g,
                    loss_mask=mask,
                    rollout_logprobs=[-rng.uniform(6.0, 14.0) for _ in range(n)],
                    rewards={"task": float((i + g) % 2)},
                    disc_score=rng.uniform(-2, 2),
                )
            )
    return samples


def all_terms_objective() -> ObjectiveConfig:
    """A one-stage objective with SFT, task PG, adversarial PG (TIS on) and k3 KL all weighted."""
    stage = Stage("all", mu=MuSchedule(kind="constant", value=0.4), lambda_adv=0.3, beta=0.2)
    return ObjectiveConfig(
        variant="uniapl", stages=[stage], pg=PolicyGradientConfig(tis_cap=2.0, clip_low=0.1, clip_high=0.15)
    ).validate()


def prepared_samples(objective: ObjectiveConfig, **kw):
    samples = mixed_samples(**kw)
    assign_advantages(samples, objective.weights_at(0), objective.pg)
    return samples
