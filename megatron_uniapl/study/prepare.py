"""Build the study's starting point: tokenizer, random model, warm start, exported base model.

    recipes/study/data/         the task files (`files.write_task`, committed)
    recipes/study/tokenizer/    the small BPE tokenizer (`vocab.train_tokenizer`, committed)
    runs/study/init_model/      a random Qwen3 of `BASE_ARCH` with that tokenizer
    runs/study/warm_start/      the framework's own SFT run on warm.jsonl (recipes/study/warm_start.yaml)
    runs/study/base_model/      its last checkpoint exported to Hugging Face format: what every
                                method starts from (written under a temporary name, then renamed)

Each step is skipped when its output exists, so a second call costs nothing and an interrupted
one resumes (the warm start resumes from its checkpoint like any run).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from megatron_uniapl.eval.model_source import export_megatron
from megatron_uniapl.study.files import write_task

logger = logging.getLogger(__name__)

BASE_ARCH = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, max_position_embeddings=256, vocab_size=1024)
"""The study model: 0.92M parameters, a head of 1,024 rows (the tokenizer's 947 tokens, padded)."""
VOCAB_SIZE = 1024
"""Tokens the study tokenizer is trained to (BPE stops earlier when it runs out of merges)."""
SEED = 0
"""Seed of the random init; the methods' seeds vary their own runs, not the shared start."""


def tokenizer_texts(data_dir: Path) -> list[str]:
    """Every prompt (in the Qwen3 chat format) and answer of the task files."""
    from megatron_uniapl.tokenizer import render_qwen3_chat

    texts = []
    for name in ("warm.jsonl", "demos.jsonl", "rl_prompts.jsonl", "eval.jsonl"):
        for line in (data_dir / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts.append(render_qwen3_chat([{"role": "user", "content": record["prompt"]}]))
            for field in ("response", "reference_response"):
                if field in record:
                    texts.append(record[field] + "<|im_end|>")
    return texts


def build_tokenizer(data_dir: Path, out_dir: Path) -> Path:
    from megatron_uniapl.study.vocab import train_tokenizer

    return train_tokenizer(tokenizer_texts(data_dir), VOCAB_SIZE, out_dir)


def create_init_model(tokenizer_dir: Path, out_dir: Path) -> Path:
    """A random Qwen3 of `BASE_ARCH` (transformers' init scale) with the study tokenizer."""
    from megatron_uniapl.model.tiny import create_tiny_qwen3
    from megatron_uniapl.study.vocab import special_ids

    ids = special_ids(tokenizer_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    create_tiny_qwen3(tmp, seed=SEED, with_tokenizer=False, std=0.02, norm_jitter=0.0, bos_token_id=ids["pad"],
                      eos_token_id=ids["eos"], pad_token_id=ids["pad"], **BASE_ARCH)
    for f in tokenizer_dir.iterdir():
        shutil.copyfile(f, tmp / f.name)
    tmp.replace(out_dir)
    return out_dir


def _run(args: list[str], what: str) -> None:
    logger.info("%s: %s", what, " ".join(args))
    proc = subprocess.run([sys.executable, *args])
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {proc.returncode} (command: {' '.join(args)})")


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run (its `latest` pointer)."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise FileNotFoundError(f"{run_dir}: no complete checkpoint ({pointer} missing)")
    return run_dir / "checkpoints" / pointer.read_text().strip()


def prepare(recipes: Path = Path("recipes/study"), runs: Path = Path("runs/study"),
            overrides: list[str] | None = None) -> Path:
    """Make sure the base model exists (building what is missing); returns its directory."""
    data_dir, tok_dir = recipes / "data", recipes / "tokenizer"
    base = runs / "base_model"
    if (base / "config.json").is_file():
        return base
    if not (data_dir / "task.json").is_file():
        logger.info("writing the study task to %s", data_dir)
        write_task(data_dir)
    if not (tok_dir / "tokenizer.json").is_file():
        logger.info("training the study tokenizer into %s", tok_dir)
        build_tokenizer(data_dir, tok_dir)
    init = runs / "init_model"
    if not (init / "config.json").is_file():
        runs.mkdir(parents=True, exist_ok=True)
        create_init_model(tok_dir, init)
    warm = runs / "warm_start"
    _run(["-m", "megatron_uniapl.train", "--config", str(recipes / "warm_start.yaml"), f"model.hf_dir={init}",
          f"logging.run_dir={warm}", *(overrides or [])], "warm start")
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    export_megatron(latest_checkpoint(warm), tmp)
    tmp.replace(base)
    logger.info("study base model ready: %s", base)
    return base
