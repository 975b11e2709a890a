"""What the vLLM engine is built from: its typed config, and the checks made before vLLM starts.

vLLM reports an unservable model late and obscurely (the CPU backend fails at the first forward
when `head_dim < 32`), and a weight push with a wrong name or shape would corrupt a live engine
half-way. Both are checked here from the checkpoint's own files (`config.json`, the safetensors
headers), before any vLLM code runs, so that the error names the file and the field or tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CPU_MIN_HEAD_DIM = 32
"""The CPU attention backend of vLLM fails at the first forward below this head size."""


class UnservableModelError(ValueError):
    """The checkpoint cannot be served by vLLM on this platform."""


@dataclass
class VLLMEngineConfig:
    """How the vLLM engine is started. Defaults suit a single-rank CPU test or demo."""

    tensor_parallel_size: int = 1
    """vLLM's own tensor parallelism. Above 1 the engine must run inside the training ranks
    (`distributed_executor_backend="external_launcher"`), one shard per rank."""
    gpu_memory_utilization: float = 0.5
    """Fraction of device memory vLLM may take for weights + KV cache. Co-located with training,
    this must leave room for the trainer's (offloaded) state. Ignored when
    `kv_cache_memory_bytes` is set. On the CPU platform it is a fraction of host RAM."""
    kv_cache_memory_bytes: int | None = None
    """Exact KV-cache size in bytes; overrides `gpu_memory_utilization`. Needed on the CPU
    platform, where a fraction of host RAM fails at start-up on a shared machine. None: use
    `gpu_memory_utilization`."""
    dtype: str = "auto"
    """Weight and activation dtype ("auto" takes the checkpoint's, or "bfloat16", "float32")."""
    max_model_len: int = 4096
    """Longest prompt + response, in tokens. Prompts must be strictly shorter."""
    seed: int = 0
    """Engine seed (samples without a per-request seed draw from it)."""
    enforce_eager: bool = False
    """Skip CUDA-graph capture: slower decoding, faster start and less memory."""
    distributed_executor_backend: str | None = None
    """None for a single-process engine; "external_launcher" to run vLLM inside the ranks that
    torchrun started (co-location), each rank one vLLM worker, without extra processes."""
    enable_sleep_mode: bool = False
    """Let the engine release device memory between rollouts (`sleep`/`wake_up`). Not supported
    by vLLM's CPU platform; there `sleep` and `wake_up` only record state, with a logged reason."""
    block_size: int | None = None
    """KV-cache block size in tokens; None takes the platform default (128 on CPU). Prefix
    caching reuses whole blocks."""
    logprobs_mode: str = "raw_logprobs"
    """Which log-probs the engine returns for sampled tokens: "raw_logprobs" (the model's
    distribution, before temperature and top-p) or "processed_logprobs" (after them)."""

    def validate(self) -> None:
        """Raise ValueError naming the field when a value cannot work."""
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.tensor_parallel_size > 1 and self.distributed_executor_backend != "external_launcher":
            raise ValueError(
                "tensor_parallel_size > 1 needs distributed_executor_backend='external_launcher': "
                "weights are pushed as tensors into in-process workers, which vLLM's own worker "
                "processes cannot receive"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes <= 0:
            raise ValueError(f"kv_cache_memory_bytes must be positive, got {self.kv_cache_memory_bytes}")
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.logprobs_mode not in ("raw_logprobs", "processed_logprobs"):
            raise ValueError(
                f"logprobs_mode must be 'raw_logprobs' or 'processed_logprobs', got {self.logprobs_mode!r}"
            )


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
