"""Which ranks run one vLLM engine, which prompts each engine serves, and how rollouts meet again.

The decision (docs/colocation.md): the engine's tensor parallelism `e` is chosen for generation,
independently of the trainer's layout. vLLM's external launcher makes consecutive blocks of `e`
global ranks one engine (`replica = rank // e`), so a world of W ranks runs W / e engines, and the
step's prompts are dealt round-robin over them: engine r serves prompts r, r + W/e, r + 2W/e, ...
This works for any trainer layout (TP, PP, DP, in any rank order) because the weight sync gives
every rank every full tensor (`megatron_sync`) and vLLM's loader cuts its own shard, and because
every rank knows the whole prompt list of the step, so the ranks of one engine derive identical
requests (prompts and seeds) without talking to each other.

Afterwards every rank needs every rollout (packing is global and deterministic). The ranks with
the same position inside their engine (`rank % e`) form one gather group with one member per
engine; an object all-gather there gives each rank all engines' generations once, without the
e-fold duplicates a world-wide gather would move.

Constraints, checked by the configuration before anything starts: `e` divides the world size,
and (vLLM's own rule) the model's attention heads are divisible by `e` and its KV heads are a
multiple or a divisor of `e`. Keep `e` within a node (NVLink); the recipes do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class EngineLayout:
    """This rank's place among the co-located engines."""

    tensor_parallel: int
    """Ranks per engine (`rollout.engine.tensor_parallel_size`)."""
    world_size: int
    """All ranks of the job; each runs one engine shard."""
    rank: int
    """This rank (global)."""

    def __post_init__(self) -> None:
        if self.tensor_parallel < 1 or self.world_size % self.tensor_parallel:
            raise ValueError(
                f"rollout.engine.tensor_parallel_size={self.tensor_parallel} must divide the "
                f"world size {self.world_size}"
            )

    @property
    def replica(self) -> int:
        """Index of this rank's engine."""
        return self.rank // self.tensor_parallel

    @property
    def replicas(self) -> int:
        """Engines in the job."""
        return self.world_size // self.tensor_parallel

    @property
    def shard(self) -> int:
        """This rank's position inside its engine (vLLM's TP rank)."""
        return self.rank % self.tensor_parallel

    def prompt_indices(self, num_prompts: int, replica: int | None = None) -> list[int]:
        """Global indices of the prompts engine `replica` (default: this rank's) serves."""
        replica = self.replica if replica is None else replica
        return list(range(replica, num_prompts, self.replicas))

    def gather_ranks(self) -> list[list[int]]:
        """The gather groups: for each position inside an engine, one rank of every engine."""
        e = self.tensor_parallel
        return [list(range(shard, self.world_size, e)) for shard in range(e)]


class EngineGroups:
    """An `EngineLayout` plus the process group its rollouts are gathered over."""

    def __init__(self, tensor_parallel: int) -> None:
        """Collective over the world (every rank creates every gather group, in one order)."""
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        self.layout = EngineLayout(tensor_parallel, world, rank)
        self.group = None
        if self.layout.replicas > 1:
            for ranks in self.layout.gather_ranks():
                group = dist.new_group(ranks)
                if rank in ranks:
                    self.group = group

    def gather(self, items: list) -> list[list]:
        """Every engine's `items`, indexed by engine (collective over this rank's gather group)."""
        if self.group is None:
            return [items]
        parts: list = [None] * self.layout.replicas
        dist.all_gather_object(parts, items, group=self.group)
        return parts

    def generate(self, colocation, weights, prompt_ids: list[list[int]], sampling, run_seed: int, step: int) -> list:
        """One rollout round: this engine generates its share of `prompt_ids` (the step's whole
        prompt list, the same on every rank), then every rank gets every generation.

        `colocation`: the `ColocationScheduler` (weights are pushed by it, on every rank, also on
        an engine with no prompt this step); `weights`: its weight source. Seeds come from
        `seeds.prompt_seed(run_seed, step, global prompt index)`. Returns `Generation`s with
        global `prompt_index`, in prompt order (each prompt's samples in the engine's order)."""
        from megatron_uniapl.rollout.seeds import prompt_seeds

        mine = self.layout.prompt_indices(len(prompt_ids))
        generations = colocation.rollout(weights, [prompt_ids[i] for i in mine], sampling,
                                         seeds=prompt_seeds(run_seed, step, mine))
        for g in generations:
            g.prompt_index = mine[g.prompt_index]
        merged = [g for part in self.gather(generations) for g in part]
        return sorted(merged, key=lambda g: g.prompt_index)
