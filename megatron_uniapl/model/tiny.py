"""Tiny randomly initialized Qwen3 checkpoints in Hugging Face format, for the CPU demo and tests.

No Qwen3 weights of a usable size can be had offline, so the CPU paths use the real tokenizer with
a tiny random model of the real architecture. `head_dim` stays >= 32 because the CPU build of
vLLM fails below that, and the vocabulary is Qwen3's real (padded) one so the tokenizer matches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from megatron_uniapl.assets import TOKENIZER_FILES, qwen3_tokenizer_dir

TINY_MARKER = "uniapl_tiny.json"
"""File in a run-created tiny model's directory recording the seed it was drawn with."""

QWEN3_VOCAB_SIZE = 151936
"""Qwen3's embedding rows: the tokenizer's 151,669 tokens padded for efficient matmuls."""


def tiny_qwen3_config(**overrides):
    """A `transformers.Qwen3Config` small enough for fast CPU tests; keyword arguments override."""
    from transformers import Qwen3Config

    fields = dict(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        torch_dtype="float32",
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    fields.update(overrides)
    return Qwen3Config(**fields)


def create_tiny_qwen3(out_dir: str | Path, seed: int = 0, with_tokenizer: bool = True, std: float = 0.08,
                      norm_jitter: float = 0.1, **overrides) -> Path:
    """Write a random tiny Qwen3 (safetensors + config.json, tokenizer files too) to `out_dir`.

    By default weights are drawn with a larger spread than transformers' default init (std 0.02)
    and norm weights jittered around 1, so that logits differ visibly between positions: parity
    tests then catch mapping mistakes. A model meant to be trained passes std=0.02, norm_jitter=0.
    """
    import torch
    from transformers import Qwen3ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_qwen3_config(**overrides)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + norm_jitter * torch.randn_like(param))
            else:
                param.normal_(0.0, std)
    model.save_pretrained(out, safe_serialization=True)
    if with_tokenizer:
        src = qwen3_tokenizer_dir()
        for name in TOKENIZER_FILES:
            shutil.copyfile(src / name, out / name)
    return out


def record_run_seed(model_dir: str | Path, seed: int) -> None:
    """Mark `model_dir` as the tiny model a run created (`model.create_tiny`) with `seed`.

    Only the run's own creation is marked: a model passed in by a user or a test is theirs, and
    `model.create_tiny` never touches a directory that already holds one."""
    (Path(model_dir) / TINY_MARKER).write_text(json.dumps({"seed": seed}) + "\n")


def tiny_model_seed(model_dir: str | Path) -> int | None:
    """The seed a run drew the tiny model in `model_dir` with; None when no run created it
    (no readable marker: a user's model, or one created before the seed was recorded)."""
    try:
        return int(json.loads((Path(model_dir) / TINY_MARKER).read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
