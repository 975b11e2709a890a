"""The one record that flows from rollout (or the demonstration reader) into training.

Everything downstream of generation (rewards, discriminator, advantages, packing, losses) reads
only `Sample`. Keeping the contract this small is what lets demonstrations and rollouts share
one batch: a demonstration is a `Sample` whose response came from the expert and whose loss is
the SFT likelihood; a rollout is a `Sample` whose response came from the policy and whose loss is
the policy-gradient surrogate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

CONSTRAINTS_KEY = "constraints"
"""The `Sample.meta` key holding a rollout's list of validated `Constraint`s (what rewards check)."""
VERDICTS_KEY = "verdicts"
"""The `Sample.meta` key holding, per constraint (same order), whether the response followed it
under the run's reward mode; written by scoring, read by the per-constraint pass rates."""
FINISH_REASON_KEY = "finish_reason"
"""The `Sample.meta` key holding the engine's finish reason of a rollout: "stop" (end of turn or
a stop string) or "length" (cut at max_tokens or the context length)."""


class SampleKind(str, enum.Enum):
    """Where a sample's response came from, which decides the loss term it feeds."""

    DEMO = "demo"
    """An expert demonstration: trained with the SFT (token NLL) term."""
    ROLLOUT = "rollout"
    """A response sampled from the current policy: trained with the policy-gradient terms."""


@dataclass
class Sample:
    """One prompt-response pair with everything the UniAPL loss needs.

    Token ids are plain Python lists (no padding); packing into tensors happens later.
    """

    prompt_ids: list[int]
    """Token ids of the chat-templated prompt (generation prompt included)."""
    response_ids: list[int]
    """Token ids of the response (expert or policy), end-of-turn token included when present."""
    kind: SampleKind
    """Demonstration or rollout; decides which loss term the sample feeds."""
    group_id: int = -1
    """Samples sharing a group id answer the same prompt; advantages are normalized per group.
    -1 for demonstrations, which are not grouped."""
    loss_mask: list[int] | None = None
    """Per response token, 1 if it contributes to the loss. None means every response token."""
    rollout_logprobs: list[float] | None = None
    """Log-probs of the response tokens under the rollout engine's weights (rollouts only)."""
    rewards: dict[str, float] = field(default_factory=dict)
    """Named scalar rewards, e.g. {"task": 1.0}; filled by the reward functions."""
    disc_score: float | None = None
    """Discriminator score of the response against the expert reference (higher = more expert)."""
    advantages: dict[str, float] = field(default_factory=dict)
    """Group-normalized advantages per signal, e.g. {"task": 0.7, "adv": -0.2}."""
    reference_text: str | None = None
    """The expert's response text for this prompt, used by the discriminator."""
    prompt_text: str | None = None
    """The prompt as text (before templating), for reward checkers and logging."""
    response_text: str | None = None
    """The decoded response, for reward checkers and logging."""
    meta: dict = field(default_factory=dict)
    """Anything else a reward needs (e.g. IFEval instruction ids and kwargs)."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SampleKind):
            self.kind = SampleKind(self.kind)
        n = len(self.response_ids)
        if self.loss_mask is not None and len(self.loss_mask) != n:
            raise ValueError(f"loss_mask has {len(self.loss_mask)} entries for {n} response tokens")
        if self.rollout_logprobs is not None and len(self.rollout_logprobs) != n:
            raise ValueError(
                f"rollout_logprobs has {len(self.rollout_logprobs)} entries for {n} response tokens"
            )

    @property
    def num_tokens(self) -> int:
        """Prompt plus response length: what the sample costs in a packed micro-batch."""
        return len(self.prompt_ids) + len(self.response_ids)
