"""Attach verifiable constraints to an instruction: draw types and kwargs, refuse contradictions,
prove the result satisfiable with a witness, and say it in natural language.

One instruction becomes one RL prompt in IFEval's format:

    prompt               instruction + the constraint sentences (catalog phrasings)
    instruction_id_list  the drawn types, each at most once
    kwargs               their drawn arguments

Types are drawn one after the other by weight among those that do not conflict with the ones
already drawn (the type table), so a weight of 0 switches a type off and the table never wastes
a draw. The arguments are then drawn; a value conflict or a missing witness rejects the whole
draw and the next attempt starts over. Every draw uses `rng` only, so a prompt is a pure
function of its seed and instruction.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field

from megatron_uniapl.dataprep import conflicts, witness
from megatron_uniapl.dataprep.catalog import SPECS
from megatron_uniapl.rewards.registry import build_constraints


DRAW_VERSION = 1
"""Version of what a seed draws (catalog ranges and phrasings, conflict rules, witnesses): bump it
with any change that alters the prompts drawn from the same seed and instructions, so that
`make_prompts` does not take an older output for an up-to-date one."""


@dataclass
class BuilderConfig:
    """How constraints are drawn for each instruction."""

    min_constraints: int = 1
    """Fewest constraints per prompt."""
    max_constraints: int = 3
    """Most constraints per prompt (IFEval's prompts have 1 to 3); the count is uniform in
    [min, max]."""
    weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in SPECS})
    """Relative draw weight per constraint type; 0 (or absent) switches a type off."""
    max_attempts: int = 50
    """Draws tried per instruction before it is skipped (counted as `no_draw`)."""

    def validate(self) -> None:
        unknown = sorted(set(self.weights) - set(SPECS))
        if unknown:
            raise ValueError(f"weights: unknown constraint type {unknown[0]!r}; known: {', '.join(sorted(SPECS))}")
        negative = [t for t, w in self.weights.items() if w < 0]
        if negative:
            raise ValueError(f"weights: {negative[0]} has a negative weight")
        if not 1 <= self.min_constraints <= self.max_constraints:
            raise ValueError(f"need 1 <= min_constraints <= max_constraints, got "
                             f"{self.min_constraints} and {self.max_constraints}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("weights: every constraint type has weight 0")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True)
class Draw:
    """One instruction with its constraints, rendered, and the witness that proves it."""

    prompt: str
    """The instruction followed by the constraint sentences."""
    instruction_ids: tuple[str, ...]
    """Constraint types in the order they are stated."""
    kwargs: tuple[dict, ...]
    """Their arguments (only the keys each type takes)."""
    witness: str
    """A response that passes every checker."""

    @property
    def key(self) -> str:
        """A content key: equal prompts with equal constraints get the same key, so generation
        resumed over a regenerated file skips exactly what is unchanged."""
        blob = json.dumps([self.prompt, self.instruction_ids, self.kwargs], sort_keys=True)
        return "mp-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def record(self) -> dict:
        """The RL-prompt record (data/schemas.py), without reference response."""
        return {"key": self.key, "prompt": self.prompt, "instruction_id_list": list(self.instruction_ids),
                "kwargs": [dict(k) for k in self.kwargs]}


def _pick_types(instruction: str, rng: random.Random, config: BuilderConfig) -> list[str] | None:
    pool = sorted(t for t, w in config.weights.items() if w > 0 and SPECS[t].eligible(instruction))
    if not pool:
        return None
    want = rng.randint(config.min_constraints, config.max_constraints)
    chosen: list[str] = []
    while len(chosen) < want:
        pool = [t for t in pool if t not in chosen and not any(conflicts.type_conflict(t, c) for c in chosen)]
        if not pool:
            return None
        chosen.append(rng.choices(pool, weights=[config.weights[t] for t in pool])[0])
    return chosen


def join_prompt(instruction: str, sentences: list[str], repeat: bool) -> str:
    """The instruction, then the constraint sentences. A request to be repeated, or one of
    several lines, stands in its own paragraph so that "the request above" is unambiguous."""
    instruction = instruction.strip()
    if repeat or "\n" in instruction:
        return instruction + "\n\n" + " ".join(sentences)
    if instruction[-1].isalnum():
        instruction += "."
    return instruction + " " + " ".join(sentences)


def draw(instruction: str, rng: random.Random, config: BuilderConfig, refused: Counter) -> Draw | None:
    """Constraints for one instruction, or None after `max_attempts` rejected draws. Every
    rejection is counted in `refused` under its rule (`types`, a value rule, `no_witness`)."""
    for _ in range(config.max_attempts):
        types = _pick_types(instruction, rng, config)
        if types is None:
            refused["types"] += 1
            continue
        pairs = [(t, SPECS[t].sample(rng, instruction)) for t in types]
        # The catalog only draws valid kwargs; validating here turns a catalog bug into an error.
        build_constraints(types, [dict(kw) for _, kw in pairs], f"draw for {instruction[:40]!r}")
        why = conflicts.value_conflict(pairs)
        if why:
            refused[why[0]] += 1
            continue
        proof = witness.build(pairs)
        if proof is None:
            refused["no_witness"] += 1
            continue
        sentences = [SPECS[t].render(kw, rng) for t, kw in pairs]
        prompt = join_prompt(instruction, sentences, conflicts.REPEAT in types)
        return Draw(prompt, tuple(types), tuple(dict(kw) for _, kw in pairs), proof)
    refused["no_draw"] += 1
    return None


def instruction_rng(seed: int, instruction: str, copy: int = 0) -> random.Random:
    """The generator of one instruction's draw: independent of every other instruction, so
    adding or removing instructions leaves the other prompts unchanged."""
    digest = hashlib.sha256(f"{seed}\0{copy}\0{instruction}".encode("utf-8")).hexdigest()
    return random.Random(int(digest[:16], 16))
