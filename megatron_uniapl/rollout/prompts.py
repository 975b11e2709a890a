"""Chat prompts as the policy sees them: Qwen3's chat template with thinking disabled.

The project trains instruction following without reasoning traces, so every prompt ends with
Qwen3's empty think block (`<think>\\n\\n</think>\\n\\n`) and the response starts right after it.
Rendering the text first and encoding it without special-token insertion keeps the ids exactly
those of the template's text, whatever the tokenizer's return type for `tokenize=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

Message = dict[str, str]
"""One chat message: {"role": "system" | "user" | "assistant", "content": str}."""

_ROLES = ("system", "user", "assistant")


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("a prompt needs at least one message")
    for index, message in enumerate(messages):
        if message.get("role") not in _ROLES:
            raise ValueError(f"message {index}: role {message.get('role')!r} is not one of {_ROLES}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {index}: content must be a string")


def render_prompt(tokenizer, messages: Sequence[Message]) -> str:
    """The templated prompt text, generation prompt and empty think block included."""
    _check_messages(messages)
    return tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, enable_thinking=False, tokenize=False
    )


def encode_prompt(tokenizer, messages: Sequence[Message]) -> list[int]:
    """Token ids of `render_prompt` (no BOS or other special tokens added beyond the template's)."""
    return tokenizer.encode(render_prompt(tokenizer, messages), add_special_tokens=False)


def encode_user_prompts(tokenizer, prompts: Sequence[str], system: str | None = None) -> list[list[int]]:
    """Token ids for single-turn prompts (one user message each, optional system message)."""
    prefix = [{"role": "system", "content": system}] if system is not None else []
    return [encode_prompt(tokenizer, prefix + [{"role": "user", "content": text}]) for text in prompts]
