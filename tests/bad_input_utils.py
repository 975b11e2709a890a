"""Shared checks of the bad-input suites: one clear line, the right exit status, nothing touched."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ROOT / "recipes" / "tiny_cpu.yaml"
DATA = ROOT / "recipes" / "data"
SMALL = [
    "train.steps=4", "checkpoint.every=2", "data.prompts_per_step=2", "data.demos_per_step=2",
    "rollout.group_size=2", "rollout.sampling.max_tokens=8", "logging.log_every=1",
    "logging.progress_bar=false", "train.micro_batch_tokens=128",
]
"""A few-second version of the tiny recipe (the loop tests use the same)."""


def copy_data(dest: Path) -> dict[str, Path]:
    """The toy data files, copied so that a case may edit them."""
    dest.mkdir(parents=True, exist_ok=True)
    return {name: Path(shutil.copy(DATA / f"toy_{name}.jsonl", dest / f"{name}.jsonl"))
            for name in ("demos", "rl_prompts", "eval")}


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` with a hash of its content (what "nothing changed" compares)."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest()
    return out


def assert_clean_error(output: str, pattern: str, prefix: str = "error: ") -> str:
    """One error line matching `pattern` (a regex), starting with `prefix`, and no traceback.
    Returns the line."""
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one {prefix!r} line, got:\n{output[-3000:]}"
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


def edit_line(path: Path, number: int, new: bytes) -> None:
    """Replace line `number` (1-based) of `path` with `new` (bytes, without the newline)."""
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = new
    path.write_bytes(b"\n".join(lines))


def own_record_removed(files: dict[str, str]) -> dict[str, str]:
    """`files` without the two files every attempt writes about itself: the run's log
    (appended) and run_status.json (how the last invocation ended)."""
    return {k: v for k, v in files.items() if Path(k).name not in ("train.log", "run_status.json")}
