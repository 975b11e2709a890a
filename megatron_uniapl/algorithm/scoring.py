"""Score rollout samples: task rewards from their constraints, discriminator scores against the
expert reference, and the co-trained discriminator's own update.

The rollout side puts the prompt's constraints in `sample.meta["constraints"]` (validated
`Constraint` objects, e.g. `RLPrompt.constraints`) and the decoded text in
`sample.response_text`; this writes one named reward per sample. Everything downstream
(advantages, logging) then reads `sample.rewards[name]` only.
"""

from __future__ import annotations

from typing import Sequence

from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.data.sample import CONSTRAINTS_KEY, VERDICTS_KEY, Sample
from megatron_uniapl.discriminator.base import CoTrainable, Discriminator
from megatron_uniapl.rewards.reward import RewardPool, judge_batch


def score_samples(samples: Sequence[Sample], mode: RewardMode | str = RewardMode.STRICT,
                  name: str = "task", pool: RewardPool | None = None) -> list[float]:
    """Set `sample.rewards[name]` (and the per-constraint verdicts, `meta[VERDICTS_KEY]`) for
    every sample and return the rewards in order.

    Raises ValueError naming the sample index when its text or constraints are missing.
    """
    prompts, responses = [], []
    for index, sample in enumerate(samples):
        if sample.response_text is None:
            raise ValueError(f"sample {index}: response_text: missing (decode the response first)")
        constraints = sample.meta.get(CONSTRAINTS_KEY)
        if not isinstance(constraints, list):
            raise ValueError(f"sample {index}: meta[{CONSTRAINTS_KEY!r}]: expected the prompt's "
                             f"list of Constraint, got {type(constraints).__name__}")
        prompts.append(constraints)
        responses.append(sample.response_text)
    judged = (pool.judge(prompts, responses, mode) if pool is not None
              else judge_batch(prompts, responses, mode))
    for sample, (reward, verdicts) in zip(samples, judged):
        sample.rewards[name] = reward
        sample.meta[VERDICTS_KEY] = verdicts
    return [reward for reward, _ in judged]


def score_with_discriminator(discriminator: Discriminator, samples: Sequence[Sample]) -> None:
    """Set `sample.disc_score = D(prompt, expert reference, response)` for every sample.

    Raises ValueError naming the samples that carry no expert reference."""
    if not samples:
        return
    missing = [i for i, s in enumerate(samples) if s.reference_text is None]
    if missing:
        raise ValueError(f"rollouts {missing[:5]} have no expert reference for the discriminator "
                         f"(add reference_response to the RL prompt file)")
    scores = discriminator.score([s.prompt_text for s in samples], [s.reference_text for s in samples],
                                 [s.response_text for s in samples])
    for s, d in zip(samples, scores):
        s.disc_score = float(d)


def cotrain_discriminator(discriminator: Discriminator | None, policy_step: int,
                          samples: Sequence[Sample]) -> dict[str, float]:
    """One policy step's updates of a co-trained discriminator (expert references vs these
    responses); nothing for a frozen or deterministic one."""
    if not isinstance(discriminator, CoTrainable) or not samples:
        return {}
    return discriminator.cotrain(policy_step, [s.prompt_text for s in samples],
                                 [s.reference_text for s in samples], [s.response_text for s in samples])
