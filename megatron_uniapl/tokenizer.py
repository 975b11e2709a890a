"""One tokenizer interface over a Hugging Face tokenizer directory or a SentencePiece `.model`.

Everything that turns text into token ids (demonstrations, RL prompts, the rollout engine's
prompts, evaluation) goes through `Tokenizer`, so the chat format is defined in one place.
Students run Qwen3 in non-thinking mode: `apply_chat(..., thinking=False)` renders the Qwen3
template with an empty think block, exactly as `enable_thinking=False` does in transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

Messages = list[dict[str, str]]


class Tokenizer(Protocol):
    """What the framework needs from a tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids, added special tokens included."""
        ...

    @property
    def eos_id(self) -> int:
        """The id that ends a response (Qwen3: `<|im_end|>`)."""
        ...

    @property
    def pad_id(self) -> int:
        """The id used to pad (Qwen3: `<|endoftext|>`)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without adding special tokens."""
        ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        ...

    def apply_chat(self, messages: Messages, add_generation_prompt: bool = True, thinking: bool = False) -> list[int]:
        """Token ids of a chat rendered with the model's template."""
        ...


# Qwen3's chat format (ChatML with think blocks), for tokenizers that carry no template.
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"


def render_qwen3_chat(messages: Messages, add_generation_prompt: bool = True, thinking: bool = False) -> str:
    """The Qwen3 chat format as text, for plain (non-tool) conversations."""
    parts = []
    for i, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: role {role!r} is not system, user or assistant")
        if role == "assistant" and "</think>" in content:
            content = content.split("</think>")[-1].lstrip("\n")
        parts.append(f"{_IM_START}{role}\n{content}{_IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{_IM_START}assistant\n")
        if not thinking:
            parts.append("<think>\n\n</think>\n\n")
    return "".join(parts)


class HFTokenizer:
    """A Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json)."""

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer

        self.path = Path(path)
        self._tok = AutoTokenizer.from_pretrained(str(self.path))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def eos_id(self) -> int:
        return self._tok.convert_tokens_to_ids(_IM_END) if _IM_END in self._tok.get_vocab() else self._tok.eos_token_id

    @property
    def pad_id(self) -> int:
        return self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat(self, messages: Messages, add_generation_prompt: bool = True, thinking: bool = False) -> list[int]:
        if self._tok.chat_template is None:
            return self.encode(render_qwen3_chat(messages, add_generation_prompt, thinking))
        text = self._tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=thinking
        )
        return self.encode(text)


class SentencePieceTokenizer:
    """A SentencePiece `.model` file; chats are rendered in the Qwen3 format as text."""

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        self._sp = spm.SentencePieceProcessor(model_file=str(self.path))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eos_id(self) -> int:
        piece = self._sp.piece_to_id(_IM_END)
        return piece if piece != self._sp.unk_id() else self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._sp.decode(list(ids))

    def apply_chat(self, messages: Messages, add_generation_prompt: bool = True, thinking: bool = False) -> list[int]:
        return self.encode(render_qwen3_chat(messages, add_generation_prompt, thinking))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a HF model/tokenizer directory or a SentencePiece `.model` file."""
    p = Path(path)
    if p.is_file() and p.suffix == ".model":
        return SentencePieceTokenizer(p)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        return HFTokenizer(p)
    if p.is_dir() and (p / "tokenizer.model").is_file():
        return SentencePieceTokenizer(p / "tokenizer.model")
    raise FileNotFoundError(f"{p}: no tokenizer.json (Hugging Face) or .model (SentencePiece) found")


def has_tokenizer(path: str | Path) -> bool:
    p = Path(path)
    return (p / "tokenizer.json").is_file() or (p / "tokenizer.model").is_file()


def check_vocab(tokenizer_size: int, model_vocab: int, where: str, max_padding: int = 1024) -> None:
    """The model's embedding rows must cover the tokenizer, with only alignment padding beyond it.

    Qwen3 pads 151,669 tokens to 151,936 rows; a tokenizer of another model family leaves either
    ids without rows or tens of thousands of unused rows, and both mean the pair is mismatched.
    """
    if tokenizer_size > model_vocab:
        raise ValueError(
            f"{where}: the tokenizer has {tokenizer_size} tokens but the model's vocab_size is "
            f"{model_vocab}: token ids >= {model_vocab} would have no embedding"
        )
    if model_vocab - tokenizer_size > max_padding:
        raise ValueError(
            f"{where}: the model's vocab_size {model_vocab} exceeds the tokenizer's {tokenizer_size} "
            f"tokens by {model_vocab - tokenizer_size} (> {max_padding}): tokenizer and model do not belong together"
        )
