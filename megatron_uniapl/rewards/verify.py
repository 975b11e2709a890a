"""Strict and loose verdicts of a response against a prompt's constraints.

IFEval reports two accuracies. Strict checks the response as written. Loose forgives the two
most common harmless deviations, a chatty first or last line ("Sure, here it is:") and
markdown emphasis, by also checking eight variants: the response with its first line, last
line or both removed, each with and without every `*` deleted; a constraint passes if any
variant passes. In both modes a blank candidate fails every constraint.
"""

from __future__ import annotations

from typing import Sequence

from megatron_uniapl.rewards.registry import Constraint


def loose_variants(response: str) -> list[str]:
    """The eight candidates of loose mode, in the reference's order, duplicates removed."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    candidates = [response, response.replace("*", ""), without_first, without_last, without_both,
                  without_first.replace("*", ""), without_last.replace("*", ""),
                  without_both.replace("*", "")]
    # Verdicts are pure functions of the text, so a repeated variant adds nothing.
    return list(dict.fromkeys(candidates))


def follows(constraint: Constraint, candidate: str) -> bool:
    """One candidate text against one constraint; blank candidates fail."""
    return bool(candidate.strip()) and constraint.check(candidate)


def follow_list(constraints: Sequence[Constraint], response: str,
                loose: bool = False) -> list[bool]:
    """Per constraint, whether the response follows it (strict, or loose over the variants)."""
    if not loose:
        return [follows(c, response) for c in constraints]
    candidates = [c for c in loose_variants(response) if c.strip()]
    return [any(c.check(candidate) for candidate in candidates) for c in constraints]
