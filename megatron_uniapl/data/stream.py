"""Endless, resumable streams of training records, and their conversion into `Sample`s.

Each stream shuffles its records once per epoch with a seed derived from (seed, epoch), so the
order is a pure function of the position: a checkpoint stores only (epoch, cursor) and a resumed
run draws exactly the records the uninterrupted run would have drawn.

Prompts longer than the limit are skipped or truncated (`data.overlong`), and counted; a stream
whose every record is unusable is an error at start-up, not an endless loop mid-training.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.data.schemas import Demonstration, RLPrompt
from megatron_uniapl.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RecordStream(Generic[T]):
    """Records in a seeded per-epoch shuffled order, forever; `take(n)` advances the position."""

    def __init__(self, records: Sequence[T], seed: int, name: str):
        if not records:
            raise ValueError(f"{name}: the dataset is empty")
        self.records = list(records)
        self.seed = seed
        self.name = name
        self.epoch = 0
        self.cursor = 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[T]:
        out = []
        while len(out) < n:
            if self.cursor == len(self._order):
                self.epoch += 1
                self.cursor = 0
                self._order = self._shuffled(self.epoch)
            out.append(self.records[self._order[self.cursor]])
            self.cursor += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "size": len(self.records), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != len(self.records):
            raise ValueError(
                f"{self.name}: the checkpoint was taken with {state['size']} records, the dataset now has "
                f"{len(self.records)}; resuming would not reproduce the run"
            )
        # A position in another shuffle is a different sequence of records (checkpoints from
        # before the seed was recorded carry none and are taken as they are).
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"{self.name}: the checkpoint was taken with data order seed {state['seed']}, this run "
                f"has {self.seed} (train.seed, or data.shuffle_seed when set); resuming would not "
                f"reproduce the run"
            )
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._shuffled(self.epoch)


@dataclass
class EncodedPrompt:
    """An RL (or demonstration) prompt, templated and tokenized, ready for the engine."""

    prompt_ids: list[int]
    prompt_text: str
    reference_text: str | None
    constraints: list = field(default_factory=list)


@dataclass
class OverlongCounter:
    """How many records were skipped or truncated for length, per dataset."""

    skipped: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, name: str) -> None:
        bucket = self.skipped if kind == "skip" else self.truncated
        bucket[name] = bucket.get(name, 0) + 1


def _fit(ids: list[int], limit: int, overlong: str, counter: OverlongCounter, name: str, keep_end: bool) -> list[int] | None:
    if len(ids) <= limit:
        return ids
    counter.add(overlong, name)
    if overlong == "skip":
        return None
    # Prompts keep their end (the generation prompt must survive); responses keep their start.
    return ids[-limit:] if keep_end else ids[:limit]


def encode_demonstration(tok: Tokenizer, demo: Demonstration, max_prompt: int, max_response: int,
                         overlong: str, counter: OverlongCounter) -> Sample | None:
    """A demo `Sample` (prompt templated with thinking off; response ends with end-of-turn)."""
    messages = [{"role": m.role, "content": m.content} for m in demo.messages]
    prompt = _fit(tok.apply_chat(messages, thinking=False), max_prompt, overlong, counter, "demo_prompt", True)
    response = _fit(tok.encode(demo.response) + [tok.eos_id], max_response, overlong, counter, "demo_response", False)
    if prompt is None or response is None:
        return None
    return Sample(
        prompt_ids=prompt, response_ids=response, kind=SampleKind.DEMO,
        prompt_text=messages[-1]["content"], response_text=demo.response, reference_text=demo.response,
    )


def encode_rl_prompt(tok: Tokenizer, prompt: RLPrompt, max_prompt: int, overlong: str,
                     counter: OverlongCounter) -> EncodedPrompt | None:
    ids = _fit(tok.apply_chat([{"role": "user", "content": prompt.prompt}], thinking=False),
               max_prompt, overlong, counter, "rl_prompt", True)
    if ids is None:
        return None
    return EncodedPrompt(ids, prompt.prompt, prompt.reference_response, list(prompt.constraints))


def check_usable(stream: RecordStream, encode, limits: str) -> None:
    """DataError at start-up when no record of `stream` encodes (with data.overlong=skip, every
    one is over a length limit): it would otherwise be found at the first step that draws one.
    Scans in file order and stops at the first usable record, so a usable file costs one encode.
    `limits`: the settings to name in the message."""
    for record in stream.records:
        if encode(record) is not None:
            return
    raise DataError(f"{stream.name}: all {len(stream.records)} records are longer than {limits} and "
                    f"data.overlong=skip skips them; raise the limits or use data.overlong=truncate")


def take_usable(stream: RecordStream, n: int, encode, max_tries_factor: int = 20) -> list:
    """Draw records until `n` of them encode (the others are overlong and skipped)."""
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > max_tries_factor * max(n, 1) + len(stream.records):
            raise DataError(f"{stream.name}: almost every record is skipped as overlong; raise the limits")
        encoded = encode(stream.take(1)[0])
        if encoded is not None:
            out.append(encoded)
    return out
