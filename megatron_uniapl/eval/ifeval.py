"""IFEval accuracies of a set of responses: the four headline numbers and a per-type table.

IFEval reports prompt-level accuracy (all constraints of a prompt followed) and
instruction-level accuracy (constraints followed over all constraints), each strict and loose.
These are the numbers the paper compares (IFEval prompt-level strict, in particular).
"""

from __future__ import annotations

import argparse
import collections
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from megatron_uniapl.data.jsonl import DataError, check_fields, expect_str, iter_jsonl
from megatron_uniapl.data.schemas import read_eval_set
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
        prompt_strict=prompt_hits[False] / len(prompts),
        prompt_loose=prompt_hits[True] / len(prompts),
        instruction_strict=instruction_hits[False] / max(num_instructions, 1),
        instruction_loose=instruction_hits[True] / max(num_instructions, 1), per_type=table)


def read_responses(path: str | Path) -> dict[str, str]:
    """IFEval's response file: JSONL of {"prompt": ..., "response": ...}, keyed by prompt."""
    responses: dict[str, str] = {}
    for where, record in iter_jsonl(path):
        check_fields(record, where, ("prompt", "response"))
        prompt = expect_str(record, "prompt", where)
        if prompt in responses:
            raise DataError(f"{where}: prompt: a second response to the same prompt")
        responses[prompt] = expect_str(record, "response", where, allow_blank=True)
    return responses


def main(argv: list[str] | None = None) -> int:
    """`python -m megatron_uniapl.eval.ifeval --prompts P.jsonl --responses R.jsonl [--out J]`."""
    parser = argparse.ArgumentParser(prog="ifeval", description="IFEval accuracies of saved "
                                     "responses (IFEval's input and response file formats)")
    parser.add_argument("--prompts", type=Path, required=True, help="IFEval-format prompts")
    parser.add_argument("--responses", type=Path, required=True,
                        help='JSONL of {"prompt", "response"}, one per prompt')
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        prompts = read_eval_set(args.prompts)
        by_prompt = read_responses(args.responses)
        missing = [p.key for p in prompts if p.prompt not in by_prompt]
        if missing:
            raise DataError(f"{args.responses}: no response for {len(missing)} prompts "
                            f"(keys {missing[:5]}...)")
    except DataError as e:
        print(f"ifeval: {e}")
        return 2
    report = evaluate(prompts, [by_prompt[p.prompt] for p in prompts])
    print(f"{report.num_prompts} prompts, {report.num_instructions} instructions")
    print(f"prompt-level strict {report.prompt_strict:.4f}  loose {report.prompt_loose:.4f}")
    print(f"instruction-level strict {report.instruction_strict:.4f}  "
          f"loose {report.instruction_loose:.4f}")
    if args.out is not None:
        args.out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
