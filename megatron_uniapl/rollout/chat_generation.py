"""Serving a model for the offline tools: start the engine, template chats, generate in batches.

Evaluation (`eval/run.py`) and teacher demonstrations (`teacher/generate.py`) both turn a list of
chat prompts into responses with the rollout engine; this module is what they share, so that
both see prompts exactly as the trainer's rollouts do (the tokenizer layer's Qwen3 template with
thinking off) and both report the same clear errors before any long generation starts.

Batches are fixed slices of the caller's list, and the sampling seed of a batch is
`seed + start` (the engine adds the prompt's index within the call), so a prompt's seed is
`seed + its position` whatever ran before it: a resumed run samples what an uninterrupted one
would have, as long as whole batches were skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.config.rollout import SamplingConfig, VLLMEngineConfig
from megatron_uniapl.rollout.engine import Generation
from megatron_uniapl.rollout.servable import read_model_config

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_CACHE_GIB = 0.5
"""KV cache for the CPU build of vLLM when none is given (there a fraction of RAM fails)."""
DEFAULT_MAX_MODEL_LEN_CAP = 8192
"""Context length used when none is given: the model's own, capped to keep the KV cache small."""


class ServeError(RuntimeError):
    """The model cannot be served (bad directory, unservable config, vLLM failed to start)."""


@dataclass
class ServeOptions:
    """How the tools start the rollout engine."""

    tensor_parallel_size: int = 1
    """vLLM tensor parallelism. Above 1 the tool must run under torchrun with that many ranks
    (vLLM's `external_launcher`: each rank holds one shard, rank 0 writes the outputs)."""
    dtype: str = "auto"
    """Weight and activation dtype: "auto" is vLLM's choice (a float32 checkpoint is served in
    16 bits), or "bfloat16", "float16", "float32"."""
    max_model_len: int | None = None
    """Longest prompt + response in tokens; None: the model's `max_position_embeddings`,
    capped at 8192."""
    kv_cache_gib: float | None = None
    """KV-cache size in GiB; None: 0.5 GiB on the CPU, else `gpu_memory_utilization` decides."""
    gpu_memory_utilization: float = 0.85
    """Fraction of GPU memory vLLM may take when `kv_cache_gib` is None."""
    seed: int = 0
    """Engine seed."""
    enforce_eager: bool = False
    """Skip CUDA-graph capture (faster start, slower decoding)."""


def engine_config(model_dir: str | Path, options: ServeOptions, on_cpu: bool) -> VLLMEngineConfig:
    """The engine config for `model_dir`, with the defaults above filled in."""
    max_len = options.max_model_len
    if max_len is None:
        max_len = min(
            int(read_model_config(model_dir).get("max_position_embeddings", 4096)), DEFAULT_MAX_MODEL_LEN_CAP
        )
    kv_gib = options.kv_cache_gib
    if kv_gib is None and on_cpu:
        kv_gib = CPU_DEFAULT_KV_CACHE_GIB
    return VLLMEngineConfig(
        tensor_parallel_size=options.tensor_parallel_size,
        distributed_executor_backend="external_launcher" if options.tensor_parallel_size > 1 else None,
        gpu_memory_utilization=options.gpu_memory_utilization,
        kv_cache_memory_bytes=None if kv_gib is None else int(kv_gib * 2**30),
        dtype=options.dtype,
        max_model_len=max_len,
        seed=options.seed,
        enforce_eager=options.enforce_eager or on_cpu,
    )


def join_world(options: ServeOptions) -> None:
    """Tensor parallelism needs a torchrun world of exactly that size: check it and join it
    (vLLM's `external_launcher` then builds its groups inside it). No-op at TP 1."""
    tp = options.tensor_parallel_size
    if tp == 1:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp:
        raise ServeError(
            f"tensor_parallel_size {tp}: launch with `torchrun --nproc-per-node {tp} ...` "
            f"(this process is in a world of {world})"
        )
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def is_writer() -> bool:
    """Whether this process writes outputs: rank 0, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def start_engine(model_dir: str | Path, options: ServeOptions):
    """A `VLLMEngine` for a Hugging Face directory, or ServeError saying why it cannot be."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ServeError(
            f"{model_dir}: no config.json (expected a Hugging Face model directory or a "
            "Megatron checkpoint directory with uniapl_model.json)"
        )
    from megatron_uniapl.convert.hf_io import CheckpointMismatchError, check_safetensors

    try:
        check_safetensors(model_dir)
    except (CheckpointMismatchError, FileNotFoundError) as err:
        raise ServeError(str(err)) from None
    join_world(options)
    from vllm.platforms import current_platform

    from megatron_uniapl.rollout.servable import UnservableModelError
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    try:
        return VLLMEngine(model_dir, engine_config(model_dir, options, current_platform.is_cpu()))
    except (UnservableModelError, ValueError, RuntimeError) as err:
        raise ServeError(f"cannot serve {model_dir}: {err}") from err


def encode_chats(tokenizer, chats: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    """Prompt ids as the policy sees them: the chat template with an empty think block."""
    return [tokenizer.apply_chat(list(chat), add_generation_prompt=True, thinking=False) for chat in chats]


def check_lengths(
    prompt_ids: Sequence[list[int]], names: Sequence[str], max_tokens: int, max_model_len: int
) -> None:
    """Every prompt must leave room for `max_tokens`; the error names the first that does not."""
    for ids, name in zip(prompt_ids, names):
        if len(ids) + max_tokens > max_model_len:
            raise ValueError(
                f"prompt {name}: {len(ids)} tokens + max_tokens {max_tokens} exceed "
                f"max_model_len {max_model_len}; raise --max-model-len or lower --max-tokens"
            )


def generate_in_batches(
    engine,
    prompt_ids: Sequence[list[int]],
    sampling: SamplingConfig,
    batch_size: int,
    skip: Callable[[int], bool] = lambda index: False,
    progress: bool = True,
    desc: str = "generate",
) -> Iterator[tuple[list[int], list[list[Generation]]]]:
    """Yield `(indices, samples)` per batch: the prompt indices generated, and for each its
    `sampling.n` generations in sample order. Prompts with `skip(index)` are not generated
    (they still count for the progress bar and for the seed positions)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm import tqdm

    total = len(prompt_ids)
    bar = tqdm(total=total, desc=desc, unit="prompt", disable=not progress or not is_writer())
    try:
        for start in range(0, total, batch_size):
            indices = [i for i in range(start, min(start + batch_size, total)) if not skip(i)]
            if indices:
                seed = None if sampling.seed is None else sampling.seed + start
                generations = engine.generate(
                    [prompt_ids[i] for i in indices], dataclasses.replace(sampling, seed=seed)
                )
                samples: list[list[Generation]] = [[] for _ in indices]
                for generation in generations:
                    samples[generation.prompt_index].append(generation)
                yield indices, samples
            bar.update(min(start + batch_size, total) - start)
    finally:
        bar.close()
