"""Instruction sources: the user's lists of requests, before any constraint is attached.

Accepted formats, chosen by the file's suffix:
- `.jsonl`: one JSON object per line; the text is the field named by `field`, or else the first
  of `instruction`, `prompt`, `text`, `question` present. An Alpaca-style non-empty `input` is
  appended to its instruction after a blank line.
- `.json`: a JSON array of such objects (or of strings), e.g. AlpacaEval's file.
- anything else: plain text, one instruction per non-blank line.

Two named sources stand for data files that ship inside the pinned asset package (see
`assets.py`), so the walkthrough runs without downloads: `asset:alpaca_eval` (805 instructions
of AlpacaEval) and `asset:ifeval` (IFEval's 541 prompts, mainly useful as an evaluation set to
decontaminate against).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_uniapl.data.jsonl import DataError, iter_jsonl

TEXT_FIELDS = ("instruction", "prompt", "text", "question")
"""Fields tried, in order, when a record's text field is not named."""


@dataclass(frozen=True)
class Instruction:
    """One request and where it came from."""

    text: str
    """The request, stripped."""
    where: str
    """`file:line` (JSONL, text) or `file[index]` (JSON array)."""


def resolve(source: str) -> Path:
    """A path, or the file behind a named asset source (`asset:alpaca_eval`, `asset:ifeval`)."""
    if source.startswith("asset:"):
        from megatron_uniapl import assets

        finders = {"asset:alpaca_eval": assets.alpaca_eval_path, "asset:ifeval": assets.ifeval_input_path}
        if source not in finders:
            raise DataError(f"{source}: unknown named source; known: {', '.join(finders)}")
        return finders[source]()
    return Path(source)


def _text_of(record: Any, where: str, field: str | None) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object or a string, got {type(record).__name__}")
    names = (field,) if field else TEXT_FIELDS
    name = next((n for n in names if n in record), None)
    if name is None:
        raise DataError(f"{where}: {names[0]}: missing (looked for {', '.join(names)})")
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: {name}: expected a string, got {type(value).__name__}")
    extra = record.get("input")
    if isinstance(extra, str) and extra.strip():
        value = value.rstrip() + "\n\n" + extra.strip()
    return value


def read_instructions(source: str, field: str | None = None) -> list[Instruction]:
    """Every instruction of a source, in file order, blank ones dropped."""
    path = resolve(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out: list[Instruction] = []
    if path.suffix == ".jsonl":
        for where, record in iter_jsonl(path):
            out.append(Instruction(_text_of(record, where, field).strip(), where))
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of instructions, got {type(data).__name__}")
        for index, record in enumerate(data):
            where = f"{path}[{index}]"
            out.append(Instruction(_text_of(record, where, field).strip(), where))
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            out.append(Instruction(line.strip(), f"{path}:{number}"))
    return [i for i in out if i.text]


def normalized(text: str) -> str:
    """Case-, width- and whitespace-insensitive form used to find duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
