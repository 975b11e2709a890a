"""A small byte-level BPE tokenizer for the study task, in the Qwen3 chat format.

Qwen3's output head has 151,936 rows; for a model of hidden size 128 that head is most of the
compute of a CPU step. The study's texts use a few hundred distinct words, so a tokenizer
trained on them with ~1,000 tokens keeps sequences short and the head small. It keeps what the
framework and vLLM rely on: Qwen3's special tokens (`<|endoftext|>` pads, `<|im_end|>` ends a
turn), the think tags as ordinary added tokens, and Qwen3's own chat template (copied from the
packaged Qwen3 tokenizer), so prompts render exactly as for a real Qwen3. Byte-level BPE encodes
any text, so a policy's odd outputs still round-trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Special tokens, in id order from 0: pad, turn start, turn end (the eos)."""
ADDED_TOKENS = ("<think>", "</think>")
"""Qwen3's think tags: added as whole tokens but not special (they are decoded as text)."""


def qwen3_chat_template() -> str:
    """The chat template of the packaged Qwen3 tokenizer."""
    from megatron_uniapl.assets import qwen3_tokenizer_dir

    return json.loads((qwen3_tokenizer_dir() / "tokenizer_config.json").read_text())["chat_template"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> Path:
    """Train a byte-level BPE of `vocab_size` tokens (specials included) on `texts` and save it
    as a Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(ADDED_TOKENS), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_tokens(list(ADDED_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = qwen3_chat_template()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def special_ids(tokenizer_dir: str | Path) -> dict[str, int]:
    """Ids of pad (`<|endoftext|>`) and eos (`<|im_end|>`) in a tokenizer made here."""
    vocab = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    return {"pad": vocab["<|endoftext|>"], "eos": vocab["<|im_end|>"]}
