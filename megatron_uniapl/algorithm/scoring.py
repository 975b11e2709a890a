"""Fill `Sample.rewards` from the constraints a rollout sample carries.

The rollout side puts the prompt's constraints in `sample.meta["constraints"]` (validated
`Constraint` objects, e.g. `RLPrompt.constraints`) and the decoded text in
`sample.response_text`; this writes one named reward per sample. Everything downstream
(advantages, logging) then reads `sample.rewards[name]` only.
"""

from __future__ import annotations

from typing import Sequence

from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.data.sample import CONSTRAINTS_KEY, Sample
from megatron_uniapl.rewards.reward import RewardPool, score_batch


def score_samples(samples: Sequence[Sample], mode: RewardMode | str = RewardMode.STRICT,
                  name: str = "task", pool: RewardPool | None = None) -> list[float]:
    """Set `sample.rewards[name]` for every sample and return the rewards in order.

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
    rewards = (pool.score(prompts, responses, mode) if pool is not None
               else score_batch(prompts, responses, mode))
    for sample, reward in zip(samples, rewards):
        sample.rewards[name] = reward
    return rewards
