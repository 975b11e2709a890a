"""What the vLLM engine is built from: its typed config, and the checks made before vLLM starts.

vLLM reports an unservable model late and obscurely (the CPU backend fails at the first forward
when `head_dim < 32`), and a weight push with a wrong name or shape would corrupt a live engine
half-way. Both are checked here from the checkpoint's own files (`config.json`, the safetensors
headers), before any vLLM code runs, so that the error names the file and the field or tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

CPU_MIN_HEAD_DIM = 32
"""The CPU attention backend of vLLM fails at the first forward below this head size."""


class UnservableModelError(ValueError):
    """The checkpoint cannot be served by vLLM on this platform."""


def read_model_config(model_dir: str | Path) -> dict:
    """The checkpoint's config.json as a dict; errors name the file."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UnservableModelError(f"{path}: no config.json; is {model_dir} a Hugging Face model directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UnservableModelError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from err


def check_servable(model_dir: str | Path, on_cpu: bool) -> dict:
    """Check what vLLM would only reject late; return config.json as a dict."""
    config = read_model_config(model_dir)
    path = Path(model_dir) / "config.json"
    for name in ("hidden_size", "num_attention_heads"):
        if name not in config:
            raise UnservableModelError(f"{path}: field {name!r} is missing")
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if on_cpu and head_dim < CPU_MIN_HEAD_DIM:
        raise UnservableModelError(
            f"{path}: field 'head_dim' is {head_dim}; vLLM's CPU backend needs head_dim >= "
            f"{CPU_MIN_HEAD_DIM} (it fails at the first forward otherwise)"
        )
    return config


def checkpoint_manifest(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor name -> shape, read from the safetensors headers (no tensor data).

    These are the full (unsharded) tensors that a weight push must supply, whatever vLLM's own
    tensor parallelism: each vLLM worker slices its shard out of the full tensor.
    """
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise UnservableModelError(f"{model_dir}: no *.safetensors files (the engine loads safetensors)")
    manifest: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                manifest[name] = tuple(handle.get_slice(name).get_shape())
    return manifest
