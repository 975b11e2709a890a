"""The three JSONL record types the framework reads, validated on load.

- `Demonstration` (SFT data): a prompt, given as plain text or as chat messages, and the
  expert's response. One JSON object per line, e.g.
  `{"prompt": "Name a prime.", "response": "7"}` or
  `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content":
  "Name a prime."}], "response": "7"}`.
- `RLPrompt` (RL data): a prompt with its verifiable constraints in IFEval's format
  (`instruction_id_list` plus a parallel `kwargs` list; IFEval's own files are accepted as
  is), optionally with the expert's reference response that the discriminator compares
  against.
- `EvalPrompt` (evaluation sets): IFEval's format exactly: `key`, `prompt`,
  `instruction_id_list`, `kwargs`.

Constraints are validated against the reward registry at load time, so an unknown type or a
bad kwarg is reported as `file:line: kwargs[1].num_words: problem` before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megatron_uniapl.data.jsonl import (
    DataError,
    check_fields,
    expect_str,
    iter_jsonl,
    read_jsonl,
)
from megatron_uniapl.rewards.registry import (
    Constraint,
    ConstraintError,
    build_constraints,
)

ROLES = ("system", "user", "assistant")
"""Chat roles a demonstration's messages may use."""


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat prompt."""

    role: str
    """'system', 'user' or 'assistant'."""
    content: str
    """The turn's text."""


@dataclass(frozen=True)
class Demonstration:
    """An expert demonstration: the prompt and the response the policy should imitate."""

    messages: tuple[ChatMessage, ...]
    """The conversation up to the response; a plain `prompt` becomes one user message. The
    last message is the user's."""
    response: str
    """The expert's response text (without the chat template's end-of-turn token)."""
    id: str | None = None
    """Optional identifier, carried into logs."""

    @property
    def prompt(self) -> str:
        """The last user message: what the response answers."""
        return self.messages[-1].content


@dataclass(frozen=True)
class RLPrompt:
    """An RL prompt: sampled G times by the policy, rewarded by its constraints."""

    prompt: str
    """The user request, as text (templated later)."""
    instruction_id_list: tuple[str, ...]
    """Constraint type ids, e.g. 'length_constraints:number_words' (IFEval format)."""
    kwargs: tuple[dict[str, Any], ...]
    """Per constraint, its arguments exactly as given (None values included)."""
    constraints: list[Constraint] = field(compare=False)
    """The validated constraints, what the reward functions check."""
    reference_response: str | None = None
    """The expert's response to this prompt, for the discriminator; None when there is none."""
    key: int | str | None = None
    """Optional identifier (IFEval's `key`)."""


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt of an IFEval-format evaluation set."""

    key: int | str
    """The prompt's identifier, reported with its scores."""
    prompt: str
    """The request given to the model."""
    instruction_id_list: tuple[str, ...]
    """Constraint type ids."""
    kwargs: tuple[dict[str, Any], ...]
    """Per constraint, its arguments exactly as given."""
    constraints: list[Constraint] = field(compare=False)
    """The validated constraints."""


def _messages(value: Any, where: str) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: messages: expected a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{at}: expected an object with role and content")
        check_fields(message, at, ("role", "content"))
        if message["role"] not in ROLES:
            raise DataError(f"{at}.role: must be one of {ROLES}, got {message['role']!r}")
        if not isinstance(message["content"], str):
            raise DataError(f"{at}.content: expected a string, got "
                            f"{type(message['content']).__name__}")
        out.append(ChatMessage(message["role"], message["content"]))
    if out[-1].role != "user":
        raise DataError(f"{where}: messages[{len(out) - 1}].role: the last message must be the "
                        f"user's (the response answers it), got {out[-1].role!r}")
    return tuple(out)


def parse_demonstration(record: dict[str, Any], where: str) -> Demonstration:
    """Validate one demonstration record (see the module docstring for the format)."""
    check_fields(record, where, ("response",), ("prompt", "messages", "id"))
    if ("prompt" in record) == ("messages" in record):
        raise DataError(f"{where}: prompt: give exactly one of prompt or messages")
    if "prompt" in record:
        messages = (ChatMessage("user", expect_str(record, "prompt", where)),)
    else:
        messages = _messages(record["messages"], where)
    record_id = record.get("id")
    if record_id is not None and not isinstance(record_id, (str, int)):
        raise DataError(f"{where}: id: expected a string or integer")
    return Demonstration(messages, expect_str(record, "response", where),
                         None if record_id is None else str(record_id))


def _constraints(record: dict[str, Any], where: str) -> tuple[tuple, tuple, list[Constraint]]:
    try:
        constraints = build_constraints(record["instruction_id_list"], record.get("kwargs"), where)
    except ConstraintError as e:
        raise DataError(str(e)) from None
    kwargs = record.get("kwargs") or [{}] * len(constraints)
    return tuple(record["instruction_id_list"]), tuple(kwargs), constraints


def _key(record: dict[str, Any], where: str) -> int | str | None:
    key = record.get("key")
    if key is not None and (isinstance(key, bool) or not isinstance(key, (int, str))):
        raise DataError(f"{where}: key: expected a string or integer, got {key!r}")
    return key


def parse_rl_prompt(record: dict[str, Any], where: str, require_reference: str | None = None) -> RLPrompt:
    """Validate one RL prompt record; `kwargs` may be omitted when no constraint has any.
    `require_reference`: why a `reference_response` is required (None: it is optional)."""
    check_fields(record, where, ("prompt", "instruction_id_list"),
                 ("kwargs", "reference_response", "key"))
    reference = record.get("reference_response")
    if reference is not None:
        reference = expect_str(record, "reference_response", where)
    elif require_reference:
        raise DataError(f"{where}: reference_response: missing; {require_reference}")
    ids, kwargs, constraints = _constraints(record, where)
    return RLPrompt(expect_str(record, "prompt", where), ids, kwargs, constraints, reference,
                    _key(record, where))


def parse_eval_prompt(record: dict[str, Any], where: str) -> EvalPrompt:
    """Validate one IFEval-format evaluation record."""
    check_fields(record, where, ("key", "prompt", "instruction_id_list", "kwargs"))
    key = _key(record, where)
    if key is None:
        raise DataError(f"{where}: key: must not be null")
    ids, kwargs, constraints = _constraints(record, where)
    return EvalPrompt(key, expect_str(record, "prompt", where), ids, kwargs, constraints)


def read_demonstrations(path: str | Path) -> list[Demonstration]:
    """All demonstrations of a JSONL file (DataError naming file:line on the first bad one)."""
    return read_jsonl(path, parse_demonstration)


def read_rl_prompts(path: str | Path, require_reference: str | None = None) -> list[RLPrompt]:
    """All RL prompts of a JSONL file; with `require_reference` (the reason), each must have a
    `reference_response`."""
    return read_jsonl(path, lambda record, where: parse_rl_prompt(record, where, require_reference))


def read_eval_set(path: str | Path) -> list[EvalPrompt]:
    """All prompts of an IFEval-format evaluation file; keys must be unique."""
    prompts: list[EvalPrompt] = []
    first_seen: dict[Any, str] = {}
    for where, record in iter_jsonl(path):
        prompt = parse_eval_prompt(record, where)
        if prompt.key in first_seen:
            raise DataError(f"{where}: key: {prompt.key!r} was already used at "
                            f"{first_seen[prompt.key]}")
        first_seen[prompt.key] = where
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path}: no records")
    return prompts
