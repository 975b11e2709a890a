"""IFEval accuracies of a set of responses: the four headline numbers and a per-type table.

IFEval reports prompt-level accuracy (all constraints of a prompt followed) and
instruction-level accuracy (constraints followed over all constraints), each strict and loose.
These are the numbers the paper compares (IFEval prompt-level strict, in particular).
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from typing import Sequence

from megatron_uniapl.rewards.reward import PromptLike, constraints_of
from megatron_uniapl.rewards.verify import follow_list


@dataclass
class IFEvalReport:
    """Accuracies in [0, 1] over one evaluation run."""

    num_prompts: int
    """Prompts evaluated."""
    num_instructions: int
    """Constraints evaluated (summed over prompts)."""
    prompt_strict: float
    """Fraction of prompts whose every constraint holds on the response as written."""
    prompt_loose: float
    """Same, with IFEval's loose variants."""
    instruction_strict: float
    """Fraction of all constraints that hold on the response as written."""
    instruction_loose: float
    """Same, with the loose variants."""
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per instruction id: {'count', 'strict', 'loose'} (accuracies over that type's uses)."""

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(prompts: Sequence[PromptLike], responses: Sequence[str]) -> IFEvalReport:
    """Score `responses[i]` against `prompts[i]`'s constraints (an `EvalPrompt`, an `RLPrompt`,
    or a list of constraints)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("nothing to evaluate")
    prompt_hits = {False: 0, True: 0}
    instruction_hits = {False: 0, True: 0}
    per_type = collections.defaultdict(lambda: {"count": 0, "strict": 0, "loose": 0})
    num_instructions = 0
    for prompt, response in zip(prompts, responses):
        constraints = constraints_of(prompt)
        verdicts = {loose: follow_list(constraints, response, loose) for loose in (False, True)}
        num_instructions += len(constraints)
        for loose, followed in verdicts.items():
            prompt_hits[loose] += all(followed)
            instruction_hits[loose] += sum(followed)
        for i, constraint in enumerate(constraints):
            row = per_type[constraint.instruction_id]
            row["count"] += 1
            row["strict"] += verdicts[False][i]
            row["loose"] += verdicts[True][i]
    table = {iid: {"count": row["count"], "strict": row["strict"] / row["count"],
                   "loose": row["loose"] / row["count"]} for iid, row in sorted(per_type.items())}
    return IFEvalReport(
        num_prompts=len(prompts), num_instructions=num_instructions,
        prompt_strict=prompt_hits[False] / len(prompts), prompt_loose=prompt_hits[True] / len(prompts),
        instruction_strict=instruction_hits[False] / max(num_instructions, 1),
        instruction_loose=instruction_hits[True] / max(num_instructions, 1), per_type=table)
