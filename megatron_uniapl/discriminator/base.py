"""The discriminator interface: how expert-like is a response, given the expert's own response.

UniAPL's adversarial signal is d = D(prompt, reference, response): a scalar, higher meaning
"closer to the expert", for each policy response. Everything downstream (group normalization into
A_adv, the reward-shaping ablation, logging) needs only this call, so a frozen reward model, a
co-trained classifier or a simple deterministic scorer are interchangeable.

Scorers that read text through a language-model tokenizer lay the three strings out with a
template (`InputTemplate`), a Python format string with the fields {prompt}, {reference} and
{response}; literal braces are written {{ and }}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Discriminator(Protocol):
    """Anything that scores policy responses against expert references."""

    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """One float per (prompt, reference, response) triple; higher = more expert-like."""
        ...



@runtime_checkable
class CoTrainable(Discriminator, Protocol):
    """A discriminator that learns alongside the policy and carries state across a resume."""

    def cotrain(self, policy_step: int, prompts: Sequence[str], references: Sequence[str],
                responses: Sequence[str]) -> dict[str, float]:
        """This policy step's updates on expert references vs policy responses; its metrics."""
        ...

    def state_dict(self) -> dict:
        """Weights, optimizer moments and counters: tensors and plain data."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        ...

def check_triples(prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]) -> int:
    """Raise ValueError unless the three lists have equal length and hold strings; return it."""
    n = len(prompts)
    if len(references) != n or len(responses) != n:
        raise ValueError(f"score() got {n} prompts, {len(references)} references, {len(responses)} responses")
    for name, values in (("prompts", prompts), ("references", references), ("responses", responses)):
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ValueError(
                    f"{name}[{i}] is {type(v).__name__}, expected str (a missing expert reference?)"
                )
    return n


def render(
    template: str, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
) -> list[str]:
    """The classifier input text of every triple (values are inserted literally, braces and all)."""
    return [
        template.format(prompt=p, reference=r, response=y) for p, r, y in zip(prompts, references, responses)
    ]


def pad_right(rows: list[list[int]], pad_id: int):
    """Token-id rows padded on the right to the longest (at least 1), and their attention mask
    (1 = a real token), as two [rows, width] long tensors. Right padding: a classifier pools the
    last non-pad token, and causal attention keeps the real tokens blind to the padding."""
    import torch

    width = max(1, max(len(r) for r in rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[k, : len(row)] = 1
    return input_ids, attention_mask
