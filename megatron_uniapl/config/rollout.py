"""How rollouts are sampled and how the vLLM engine is started (torch-free settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEED_SAMPLE_BITS = 16
"""Low bits of a prompt's sampling seed left free for vLLM's per-sample offsets (rollout/seeds.py)."""
MAX_SAMPLES_PER_PROMPT = 1 << SEED_SAMPLE_BITS
"""Largest rollout.group_size: beyond it one prompt's sample seeds would reach the next prompt's."""


@dataclass
class SamplingConfig:
    """How responses are sampled."""

    n: int = 1
    """Samples per prompt (the GRPO group size G for RL prompts)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 256
    """Maximum number of generated tokens per sample."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a sample (not included in the output)."""
    seed: int | None = None
    """Seed for reproducible sampling; None draws a fresh one."""


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
    disable_custom_all_reduce: bool = False
    """Use NCCL instead of vLLM's custom all-reduce kernels for the engine's tensor parallelism.
    Co-located engines with sleep mode set it: the custom kernels register IPC buffers at
    start-up that the sleep/wake cycle and the trainer's NCCL traffic share the GPUs with, and
    the co-locating frameworks (verl, slime) turn them off. Ignored at tensor_parallel_size 1."""
    logprobs_mode: str = "processed_logprobs"
    """Which log-probs the engine returns for sampled tokens: "processed_logprobs" (those of the
    distribution sampled from, after temperature and top-p) or "raw_logprobs" (the model's
    distribution at temperature 1). The two agree at temperature 1 and top-p 1. Training
    rollouts at another temperature need "processed_logprobs", since the trainer's log-probs of
    rollout tokens are tempered too. Prompt log-probs (`VLLMEngine.score`) are raw either way."""

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
