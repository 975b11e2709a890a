"""A small verifiable instruction-following task that a tiny model can learn on a CPU.

The CPU demo needs a task where the reward starts near zero for a random model, can be reached
with a few dozen short tokens, and is scored by the same IFEval checkers as the real runs. Every
prompt asks for one short sentence about a topic under one or two format constraints:

    constraint (IFEval id)              instruction in the prompt                 expert response
    constraint (IFEval id)              instruction in the prompt                    expert response (S)
    startend:quotation                  "Wrap your entire answer in double quotes."  "S"
    change_case:english_lowercase       "Answer in lowercase letters only."          s (lower-cased)
    change_case:english_capital         "Answer in capital letters only."            S (upper-cased)
    startend:end_checker (end_phrase)   "End your answer with the phrase 'P'."       S P
    quotation + english_lowercase       both instructions                            "s"

with S = "My favorite color is the blue and I like it very much." (topic and word vary).

The (topic, word, constraint) combinations are shuffled with a seed and split into disjoint
demonstration, RL-prompt and evaluation sets, so the evaluation prompts are unseen. Every expert
response is checked with the reward functions when generated (strict reward 1.0), so the
demonstrations are guaranteed to satisfy what the prompts ask.

    python -m megatron_uniapl.data.toy_task --out recipes/data
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.rewards.registry import build_constraints
from megatron_uniapl.rewards.reward import score

TOPICS: dict[str, tuple[str, ...]] = {
    "color": ("blue", "green", "red", "yellow", "purple", "orange"),
    "animal": ("cat", "dog", "horse", "rabbit", "tiger", "eagle"),
    "fruit": ("apple", "banana", "cherry", "grape", "mango", "pear"),
    "season": ("spring", "summer", "autumn", "winter"),
    "sport": ("tennis", "soccer", "swimming", "running", "chess"),
    "drink": ("tea", "coffee", "water", "milk", "juice"),
}
"""Topic -> the words an answer may name (all read as English by the language detector)."""

SENTENCE = "My favorite {topic} is the {word} and I like it very much."
"""The answer sentence; long enough for the language detector to read it as English in every case."""

END_PHRASES = ("Hope this helps.", "That is all.", "Any other questions?")
"""Phrases of the end_checker constraint."""


@dataclass(frozen=True)
class ToyConstraint:
    """One instruction of the task: its IFEval ids and kwargs, its wording, and the expert's format."""

    name: str
    """Short name used in record ids."""
    instruction_ids: tuple[str, ...]
    """IFEval constraint ids, in the order of `kwargs`."""
    kwargs: tuple[dict, ...]
    """Per constraint, its arguments."""
    instruction: str
    """The sentence added to the prompt."""

    def respond(self, sentence: str) -> str:
        """The expert response: `sentence` formatted to satisfy every constraint."""
        out = sentence
        for cid, kw in zip(self.instruction_ids, self.kwargs):
            if cid == "change_case:english_lowercase":
                out = out.lower()
            elif cid == "change_case:english_capital":
                out = out.upper()
            elif cid == "startend:end_checker":
                out = f"{out} {kw['end_phrase']}"
        if "startend:quotation" in self.instruction_ids:
            out = f'"{out}"'
        return out


def constraints() -> list[ToyConstraint]:
    """Every constraint variant of the task (see the module table)."""
    quote = "Wrap your entire answer in double quotes."
    lower = "Answer in lowercase letters only."
    out = [
        ToyConstraint("quote", ("startend:quotation",), ({},), quote),
        ToyConstraint("lower", ("change_case:english_lowercase",), ({},), lower),
        ToyConstraint("upper", ("change_case:english_capital",), ({},), "Answer in capital letters only."),
        ToyConstraint("quote_lower", ("startend:quotation", "change_case:english_lowercase"), ({}, {}),
                      f"{quote} {lower}"),
    ]
    for i, phrase in enumerate(END_PHRASES):
        out.append(ToyConstraint(f"end{i}", ("startend:end_checker",), ({"end_phrase": phrase},),
                                 f"End your answer with the phrase '{phrase}'."))
    return out


@dataclass(frozen=True)
class ToyExample:
    """One (topic, word, constraint) combination with its prompt and expert response."""

    id: str
    """Unique id, e.g. 'color-blue-quote'."""
    prompt: str
    """The user request."""
    response: str
    """The expert response, which satisfies every constraint."""
    constraint: ToyConstraint
    """What the prompt asks for."""


def examples() -> list[ToyExample]:
    """Every combination, in a fixed order; each response is verified by the reward functions."""
    out = []
    for topic, words in TOPICS.items():
        for word in words:
            sentence = SENTENCE.format(topic=topic, word=word)
            for c in constraints():
                ex = ToyExample(f"{topic}-{word}-{c.name}", f"Name your favorite {topic}. {c.instruction}",
                                c.respond(sentence), c)
                checks = build_constraints(list(c.instruction_ids), [dict(k) for k in c.kwargs], ex.id)
                if score(checks, ex.response) != 1.0:
                    raise AssertionError(f"toy task: expert response {ex.response!r} fails {c.instruction_ids}")
                out.append(ex)
    return out


def split(seed: int = 0, eval_size: int = 40, demo_fraction: float = 0.5) -> dict[str, list[ToyExample]]:
    """Disjoint 'demos', 'rl' and 'eval' sets: a seeded shuffle, `eval_size` held out, the rest
    divided `demo_fraction` : 1 - `demo_fraction`."""
    pool = examples()
    random.Random(seed).shuffle(pool)
    held, rest = pool[:eval_size], pool[eval_size:]
    cut = round(len(rest) * demo_fraction)
    return {"demos": rest[:cut], "rl": rest[cut:], "eval": held}


def demo_record(ex: ToyExample) -> dict:
    """A demonstration record (data/schemas.py format)."""
    return {"id": ex.id, "prompt": ex.prompt, "response": ex.response}


def rl_record(ex: ToyExample) -> dict:
    """An RL prompt record with the expert reference response for the discriminator."""
    return {"key": ex.id, "prompt": ex.prompt, "instruction_id_list": list(ex.constraint.instruction_ids),
            "kwargs": [dict(k) for k in ex.constraint.kwargs], "reference_response": ex.response}


def eval_record(ex: ToyExample) -> dict:
    """An IFEval-format evaluation record."""
    return {"key": ex.id, "prompt": ex.prompt, "instruction_id_list": list(ex.constraint.instruction_ids),
            "kwargs": [dict(k) for k in ex.constraint.kwargs]}


FILES = {"demos": ("toy_demos.jsonl", demo_record), "rl": ("toy_rl_prompts.jsonl", rl_record),
         "eval": ("toy_eval.jsonl", eval_record)}
"""Split -> (file name, record builder)."""


def write(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the three JSONL files into `out_dir`; returns split -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in split(seed).items():
        file_name, to_record = FILES[name]
        paths[name] = out_dir / file_name
        paths[name].write_text("".join(json.dumps(to_record(ex)) + "\n" for ex in rows))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the toy instruction-following data set")
    parser.add_argument("--out", default="recipes/data", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    args = parser.parse_args(argv)
    for name, path in write(args.out, args.seed).items():
        print(f"{name}: {path} ({sum(1 for _ in path.open())} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
