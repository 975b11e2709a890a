"""Sampling seeds of the rollouts: distinct for every prompt of every step, identical on every
rank that serves the prompt, and reproducible after a resume.

vLLM seeds a request with `n` samples by giving sample j the seed `seed + j`. The previous scheme
(`base + step` for the call, `+ i` for the i-th prompt of the call) therefore reused streams: prompt
i's sample 1 drew the same random numbers as prompt i+1's sample 0, step s+1's prompt i the same as
step s's prompt i+1, and every data-parallel rank (each numbering its own prompts from 0) the same
as every other. Here each prompt gets a hash of (run seed, step, GLOBAL prompt index) with its low
16 bits cleared, so the `n` child seeds of one prompt can never run into another prompt's (up to
65,536 samples per prompt; two prompts collide only if 46 hash bits do).

What is deliberately NOT an input: the global rank (every rank of one engine must send identical
requests under vLLM's external launcher) and the engine's data-parallel index. The global prompt
index already differs between the prompts of different ranks, and leaving the layout out means a
rollout's samples do not depend on how many engines shared the step.
"""

from __future__ import annotations

import hashlib

from megatron_uniapl.config.rollout import SEED_SAMPLE_BITS


def prompt_seed(run_seed: int, step: int, prompt_index: int) -> int:
    """The vLLM seed of the `prompt_index`-th prompt (global numbering) of optimizer step `step`.

    A non-negative integer below 2**62, a multiple of 2**16."""
    if step < 0 or prompt_index < 0:
        raise ValueError(f"step and prompt_index must be >= 0, got {step}, {prompt_index}")
    digest = hashlib.blake2b(f"{run_seed}:{step}:{prompt_index}".encode(), digest_size=8).digest()
    high = int.from_bytes(digest, "little") >> (64 - 62 + SEED_SAMPLE_BITS)  # 46 bits
    return high << SEED_SAMPLE_BITS


def prompt_seeds(run_seed: int, step: int, prompt_indices: list[int]) -> list[int]:
    """`prompt_seed` of each index."""
    return [prompt_seed(run_seed, step, i) for i in prompt_indices]
