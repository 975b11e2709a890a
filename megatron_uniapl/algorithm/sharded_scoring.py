"""Task rewards and discriminator scores of a step's rollouts, each rank scoring a share.

Every rank holds the step's whole rollout list (the engines' generations are gathered to all),
so scoring everything everywhere would repeat the same work on every rank: the constraint checks
(CPU) and, worse, the frozen discriminator's forward passes (one per rollout, on every GPU).
Instead rank r scores rollouts r, r + W, r + 2W, ... and an object all-gather of the (index,
reward, verdicts, score) results gives every rank every result. A discriminator whose `score` is itself
collective over a group of consecutive ranks (the co-trained Megatron backbone: its tensor-
parallel group) is called by that whole group with the same share (`collective_ranks`).

Rewards are pure functions of the text, so the sharded results equal the unsharded ones exactly;
discriminator scores equal them up to batching (the frozen model batches by length).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence

import torch.distributed as dist

from megatron_uniapl.algorithm.scoring import score_samples, score_with_discriminator
from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.data.sample import VERDICTS_KEY, Sample


def shard_indices(count: int, rank: int, world: int, collective_ranks: int = 1) -> list[int]:
    """Indices of `count` items that `rank` scores: one share per block of `collective_ranks`
    consecutive ranks, dealt round-robin."""
    if collective_ranks < 1 or world % collective_ranks:
        raise ValueError(f"collective_ranks={collective_ranks} must divide the world size {world}")
    return list(range(rank // collective_ranks, count, world // collective_ranks))


def score_rollouts(
    rollouts: Sequence[Sample],
    mode: RewardMode | str,
    discriminator=None,
    pool=None,
    collective_ranks: int = 1,
    times: MutableMapping[str, float] | None = None,
) -> None:
    """Set `rewards["task"]`, the per-constraint verdicts (`meta[VERDICTS_KEY]`) and, with a
    discriminator, `disc_score` on every rollout.

    Collective over the world when it has more than one rank; every rank must pass the same
    rollouts. `pool`: a `rewards.reward.RewardPool` for this rank's share, or None (in-process).
    Raises ValueError (on every rank alike, before any collective) when the discriminator needs
    an expert reference that a rollout lacks. `times`, when given, gets this rank's seconds of
    `time/reward_s` (constraint checks), `time/disc_score_s` (discriminator) and
    `time/score_gather_s` (waiting for and gathering the other ranks' shares).
    """
    times = {} if times is None else times

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[f"time/{name}_s"] = now - clock
        clock = now

    if discriminator is not None:
        missing = [i for i, s in enumerate(rollouts) if s.reference_text is None]
        if missing:
            raise ValueError(f"rollouts {missing[:5]} have no expert reference for the discriminator "
                             f"(add reference_response to the RL prompt file)")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    mine = shard_indices(len(rollouts), rank, world, collective_ranks)
    share = [rollouts[i] for i in mine]
    clock = time.perf_counter()
    rewards = score_samples(share, mode, pool=pool) if share else []
    lap("reward")
    # The ranks of a collective discriminator's group hold the same share: they call it together
    # or, with an empty share, not at all.
    if discriminator is not None:
        score_with_discriminator(discriminator, share)
        lap("disc_score")
    results = [(i, reward, s.meta[VERDICTS_KEY], s.disc_score) for i, reward, s in zip(mine, rewards, share)]
    if world > 1:
        parts: list = [None] * world
        dist.all_gather_object(parts, results)
        results = [r for part in parts for r in part]
        lap("score_gather")
    for index, reward, verdicts, disc in results:
        rollouts[index].rewards["task"] = reward
        rollouts[index].meta[VERDICTS_KEY] = verdicts
        if discriminator is not None:
            rollouts[index].disc_score = disc
