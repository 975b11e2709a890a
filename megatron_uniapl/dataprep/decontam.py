"""Decontamination: keep training instructions that overlap an evaluation prompt out of the data.

Overlap is measured on word n-grams of normalized text (NFKC, case-folded, `\\w+` words), and
on the instruction only. Whole prompts cannot be compared: training prompts and IFEval prompts
state their constraints in the same template wording, so every pair would share n-grams. So:
- the training side is the instruction before any constraint is attached;
- the evaluation side is the whole eval prompt minus its *boilerplate*: n-grams that occur in
  at least `boilerplate_min_prompts` different eval prompts (IFEval's constraint wording recurs
  across prompts, a request's own words do not), and n-grams of this project's constraint
  phrasings (`catalog`), which an eval file written by `make_prompts` would carry.

An instruction is contaminated by an eval prompt when their shared n-grams make up at least
`threshold` of the instruction's n-grams (the instruction occurs inside the eval prompt) or of
the eval prompt's (the eval request occurs inside the instruction). Instructions shorter than
`n` words have no n-grams; they are dropped only when equal to an eval prompt (after
normalization) and are counted separately, so that a report shows how many were checked only
that way.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.data.jsonl import DataError, iter_jsonl
from megatron_uniapl.data.manifest import sha256_file

_WORD = re.compile(r"\w+")


@dataclass
class DecontamConfig:
    """How instructions are compared with evaluation prompts."""

    n: int = 6
    """N-gram length in words. 6 suits instructions of one or two sentences: on AlpacaEval's
    805 instructions against IFEval no pair shares more than 17% of its 6-grams, while the
    first sentence of 522 of IFEval's 541 prompts is caught (16 of the rest are shorter)."""
    threshold: float = 0.5
    """Drop when shared n-grams are at least this fraction of either side's n-grams."""
    boilerplate_min_prompts: int = 3
    """An n-gram in at least this many different eval prompts is template wording, not content."""

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"decontamination n must be >= 1, got {self.n}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"decontamination threshold must be in (0, 1], got {self.threshold}")
        if self.boilerplate_min_prompts < 2:
            raise ValueError(f"boilerplate_min_prompts must be >= 2, got {self.boilerplate_min_prompts}")


def words(text: str) -> list[str]:
    """Normalized words of a text."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class EvalSet:
    """The prompts of one evaluation file."""

    name: str
    """As given (a path or a named asset)."""
    path: Path
    """The file read."""
    sha256: str
    """Its content hash, recorded in manifests."""
    prompts: tuple[tuple[str, str], ...]
    """(key, prompt text) per record."""


def read_eval_set(name: str, path: Path) -> EvalSet:
    """An IFEval-format JSONL (`key` and `prompt` are read; a missing key becomes the line), or
    a plain-text file with one prompt per line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    prompts = []
    if path.suffix == ".jsonl":
        for where, record in iter_jsonl(path):
            if not isinstance(record.get("prompt"), str):
                raise DataError(f"{where}: prompt: missing or not a string")
            prompts.append((str(record.get("key", where.rsplit(":", 1)[1])), record["prompt"]))
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                prompts.append((str(number), line))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return EvalSet(name, path, sha256_file(path), tuple(prompts))


@dataclass(frozen=True)
class Match:
    """Why an instruction was dropped."""

    eval_set: str
    """The eval set's name."""
    key: str
    """The eval prompt's key."""
    overlap: float
    """Shared n-grams over the smaller side's n-grams (1.0 for an exact match)."""
    kind: str
    """"ngram" or "exact" (instructions shorter than n words)."""


def template_texts(samples_per_phrasing: int = 4, seed: int = 0) -> list[str]:
    """This project's constraint sentences, rendered with a few kwargs draws each."""
    from megatron_uniapl.dataprep.catalog import SPECS

    rng = random.Random(seed)
    instruction = "Describe the water cycle in simple terms for a child."
    out = []
    for spec in SPECS.values():
        for phrasing in spec.phrasings:
            for _ in range(samples_per_phrasing):
                out.append(phrasing.format(**spec.fields(spec.sample(rng, instruction))))
    return out


class EvalIndex:
    """The n-grams of every eval prompt, boilerplate removed, for fast lookups."""

    def __init__(self, eval_sets: list[EvalSet], config: DecontamConfig):
        config.validate()
        self.config = config
        self.eval_sets = eval_sets
        n = config.n
        per_prompt = [(s.name, key, ngrams(words(text), n)) for s in eval_sets for key, text in s.prompts]
        seen = Counter(g for _, _, grams in per_prompt for g in grams)
        self.boilerplate = {g for g, c in seen.items() if c >= config.boilerplate_min_prompts}
        for sentence in template_texts():
            self.boilerplate |= ngrams(words(sentence), n)
        self._index: dict[tuple, list[int]] = defaultdict(list)
        self._ids: list[tuple[str, str]] = []
        self._sizes: list[int] = []
        for name, key, grams in per_prompt:
            content = grams - self.boilerplate
            self._ids.append((name, key))
            self._sizes.append(len(content))
            for g in content:
                self._index[g].append(len(self._ids) - 1)
        self._exact = {" ".join(words(text)): (s.name, key) for s in eval_sets for key, text in s.prompts}

    def match(self, instruction: str) -> Match | None:
        """The eval prompt this instruction overlaps most, if at or over the threshold."""
        tokens = words(instruction)
        if len(tokens) < self.config.n:
            hit = self._exact.get(" ".join(tokens))
            return Match(hit[0], hit[1], 1.0, "exact") if hit else None
        grams = ngrams(tokens, self.config.n) - self.boilerplate
        if not grams:
            return None
        shared = Counter(i for g in grams for i in self._index.get(g, ()))
        best: Match | None = None
        for i, count in shared.items():
            overlap = max(count / len(grams), count / self._sizes[i])
            if overlap >= self.config.threshold and (best is None or overlap > best.overlap):
                best = Match(*self._ids[i], round(overlap, 4), "ngram")
        return best

    def manifest(self) -> dict:
        """The eval sets and settings, for the data manifest."""
        return {
            "n": self.config.n, "threshold": self.config.threshold,
            "boilerplate_min_prompts": self.config.boilerplate_min_prompts,
            "boilerplate_ngrams": len(self.boilerplate),
            "eval_sets": [{"name": s.name, "path": str(s.path), "sha256": s.sha256, "prompts": len(s.prompts)}
                          for s in self.eval_sets],
        }
