"""A model directory the engine can serve, from a Hugging Face directory or a Megatron checkpoint.

Training writes Megatron distributed checkpoints (`uniapl_model.json` marks one); vLLM serves
Hugging Face safetensors. Evaluating a training checkpoint therefore exports it first, with the
project's converter, into a temporary directory that lives as long as the evaluation. The export
runs in a child process: it builds a Megatron model and a process group, and neither should
linger in the process that then hosts vLLM (device memory, global parallel state).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from megatron_uniapl.rollout.chat_generation import ServeError

logger = logging.getLogger(__name__)

MEGATRON_MARKER = "uniapl_model.json"
"""The file that makes a directory a Megatron checkpoint of this project."""
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def model_format(path: str | Path) -> str:
    """"megatron" or "hf"; ServeError for a path that is neither."""
    path = Path(path)
    if not path.exists():
        raise ServeError(f"{path}: no such model directory")
    if not path.is_dir():
        raise ServeError(f"{path}: not a directory (expected a Hugging Face model directory or a "
                         f"Megatron checkpoint directory with {MEGATRON_MARKER})")
    if (path / MEGATRON_MARKER).is_file():
        return "megatron"
    if (path / "config.json").is_file():
        return "hf"
    raise ServeError(f"{path}: neither config.json (Hugging Face) nor {MEGATRON_MARKER} (Megatron "
                     "checkpoint) found")


def export_megatron(mcore_dir: Path, out_dir: Path) -> None:
    """Export a Megatron checkpoint to HF safetensors in a child process (ServeError on failure)."""
    code = ("import sys; from megatron_uniapl.convert.tool import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    # A torchrun world of the caller must not leak into the single-process export.
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    logger.info("exporting Megatron checkpoint %s to %s", mcore_dir, out_dir)
    proc = subprocess.run([sys.executable, "-c", code, "export", "--mcore-dir", str(mcore_dir),
                           "--out-dir", str(out_dir)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise ServeError(f"{mcore_dir}: export to Hugging Face format failed: "
                         f"{lines[-1] if lines else f'exit code {proc.returncode}'}")


@contextlib.contextmanager
def servable_model_dir(path: str | Path) -> Iterator[tuple[Path, str]]:
    """`(hf_dir, format)`: the directory itself for HF, a temporary export for Megatron (removed
    on exit)."""
    path = Path(path)
    fmt = model_format(path)
    if fmt == "hf":
        yield path, fmt
        return
    with tempfile.TemporaryDirectory(prefix="uniapl_export_") as tmp:
        out = Path(tmp) / "hf"
        export_megatron(path, out)
        yield out, fmt
