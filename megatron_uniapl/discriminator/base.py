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

import string
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

TEMPLATE_FIELDS = frozenset({"prompt", "reference", "response"})

POLAR_LIKE_TEMPLATE = (
    "<|im_start|>user\n{prompt}<|im_end|>\n"
    "<|im_start|>assistant\nReference response:\n{reference}\n\n"
    "Candidate response:\n{response}<|im_end|>"
)
"""Default layout: the prompt as the user turn, then the expert reference and the candidate in one
assistant turn, so a sequence classifier reads the candidate with the reference in context (the
reference-conditioned pattern of POLAR-style reward models). Use the layout the checkpoint was
trained with when it has one."""


@runtime_checkable
class Discriminator(Protocol):
    """Anything that scores policy responses against expert references."""

    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """One float per (prompt, reference, response) triple; higher = more expert-like."""
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


def validate_template(
    template: str, where: str = "template", required: frozenset = frozenset({"response"})
) -> str:
    """Check that `template` uses only {prompt}/{reference}/{response} and all `required` ones."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(
            f"{where} is not a valid format string ({err}); write literal braces as {{{{ }}}}"
        ) from err
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"{where} uses unknown field(s) {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    missing = set(required) - fields
    if missing:
        raise ValueError(f"{where} lacks the field(s) {sorted(missing)}")
    return template


def render(
    template: str, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
) -> list[str]:
    """The classifier input text of every triple (values are inserted literally, braces and all)."""
    return [
        template.format(prompt=p, reference=r, response=y) for p, r, y in zip(prompts, references, responses)
    ]
