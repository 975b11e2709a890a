"""What a recipe rehearsal may change, and how: the explicit list, and the shrink of one recipe.

A rehearsal runs a shipped recipe as it is (its parallel layout, objective, packing, dtype,
discriminator kind, reward, checkpointing) and changes only what a CPU (or a short smoke run)
cannot hold. Every field it may touch is named in `SHRINKABLE` with the reason; tests hold a copy
of that list and compare every field of every shipped recipe before and after the shrink, so no
other field can drift in silently.

The parallel layout is kept up to `max_ranks` processes. Beyond that, dimensions are reduced in
this order, each reduction reported with its reason: data parallelism to 2 (two ranks exercise
every data-parallel path: sharded optimizer, gathers, balanced packing), then halving tensor
parallelism while it is above 2, then pipeline parallelism above 2, then data parallelism to 1,
then tensor or pipeline parallelism to 1. Head counts stay the recipe model's, so every TP size
that divides its KV heads stays valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from megatron_uniapl.config import RunConfig
from megatron_uniapl.config.model import token_multiple
from megatron_uniapl.config.yaml_io import build, to_data

SHRINKABLE: dict[str, str] = {
    "model.hf_dir": "a tiny random model of the recipe's Qwen3 (same head counts, GQA ratio and tying; hidden 64, "
                    "head_dim 32, depth 2 per pipeline stage), made on the fly",
    "model.init_checkpoint": "no converted checkpoint of the tiny model: it starts from its HF weights",
    "model.tokenizer": "the tiny model directory carries the real Qwen3 tokenizer",
    "model.tensor_parallel": "only when the layout needs more ranks than allowed (reported)",
    "model.pipeline_parallel": "only when the layout needs more ranks than allowed (reported)",
    "model.virtual_pipeline_stages": "dropped with pipeline parallelism (reported)",
    "model.sequence_parallel": "dropped only if tensor parallelism had to go to 1 (reported)",
    "model.spec": "te -> portable: no Transformer Engine on a CPU",
    "model.fp8": "FP8 needs Transformer Engine on a Hopper-class GPU",
    "model.dtype": "only with --float32: CPUs without AVX-512 BF16/AMX emulate bf16 GEMMs (~25x slower here)",
    "rollout.engine.dtype": "only with --float32: the engine runs in the trainer's dtype",
    "objective.first_stage_steps": "staged variants: 1, so the 3 steps cross into the second stage",
    "rollout.group_size": "batch size: 2 samples per prompt",
    "rollout.sampling.max_tokens": "sequence cap",
    "rollout.engine.max_model_len": "sequence cap",
    "rollout.engine.tensor_parallel_size": "only when it does not divide the reduced world (reported)",
    "rollout.engine.enable_sleep_mode": "vLLM's CPU platform has no sleep mode",
    "rollout.engine.kv_cache_memory_bytes": "CPU: a fixed 64 MiB (a fraction of host RAM fails on shared machines)",
    "rollout.engine.enforce_eager": "CPU: no CUDA graphs",
    "rollout.verify_every": "1: every sync is checked, so the figure is printed for each",
    "discriminator.frozen.path": "a tiny random sequence classifier, made on the fly",
    "discriminator.frozen.device": "cuda -> cpu",
    "discriminator.cotrained_init": "the tiny model",
    "reward.num_workers": "at most 1 worker process per rank (CPU cores)",
    "data.demo_file": "the repository's toy demonstrations (recipes/data)",
    "data.rl_prompt_file": "the repository's toy RL prompts (recipes/data)",
    "data.prompts_per_step": "batch size: one prompt per engine, at least 2",
    "data.demos_per_step": "batch size: as many as prompts",
    "data.max_prompt_tokens": "sequence cap",
    "data.max_response_tokens": "sequence cap",
    "train.device": "cuda -> auto: the CPU path (gloo, Megatron-Core's CPU support)",
    "train.steps": "3 steps: 2, a checkpoint, then the third again from that checkpoint",
    "train.micro_batch_tokens": "sequence cap (several micro-batches per step remain)",
    "checkpoint.every": "2",
    "checkpoint.dir": "inside the rehearsal's run directory",
    "checkpoint.resume": "the resume phase starts from the first phase's step-2 checkpoint",
    "logging.run_dir": "the rehearsal's output directory",
    "logging.wandb_mode": "disabled: a rehearsal reports on the console",
    "logging.progress_bar": "off",
    "logging.log_every": "1",
}
"""Every field a rehearsal may change, with the reason. Nothing else is touched."""

FULL_SIZE_SHRINKABLE = ("train.steps", "checkpoint.every", "checkpoint.dir", "checkpoint.resume",
                        "logging.run_dir", "logging.wandb_mode", "logging.progress_bar", "logging.log_every",
                        "rollout.verify_every")
"""The fields a full-size smoke run (on the recipe's GPUs) changes: only length and output."""

CPU_CAPS = {"data.max_prompt_tokens": 64, "data.max_response_tokens": 48, "rollout.sampling.max_tokens": 16,
            "rollout.engine.max_model_len": 256}
"""Sequence caps on a CPU. The toy prompts template to <= 31 tokens and their expert answers to
<= 18; the engine's length leaves room for the sync check's 160-token sequence."""
KV_CACHE_BYTES = 64 << 20
STEPS = 3
CHECKPOINT_AT = 2


@dataclass
class Change:
    """One field the rehearsal changed."""

    path: str
    before: Any
    after: Any

    @property
    def why(self) -> str:
        return SHRINKABLE[self.path]


@dataclass
class Plan:
    """A recipe made runnable here: the configuration, the world it needs, what changed."""

    config: RunConfig
    """The rehearsal's configuration (validated)."""
    world: int
    """Ranks to start."""
    changes: list[Change]
    """Every field that differs from the recipe."""
    reductions: list[str] = field(default_factory=list)
    """Why a parallel dimension was reduced (empty when the layout fits)."""


def reduce_layout(tp: int, pp: int, dp: int, max_ranks: int) -> tuple[int, int, int, list[str]]:
    """The (tp, pp, dp) a rehearsal runs for a layout, and a sentence per reduction."""
    notes: list[str] = []
    if dp > 2:
        notes.append(f"data parallelism {dp} -> 2: two data-parallel ranks exercise every data-parallel path")
        dp = 2
    while tp * pp * dp > max_ranks:
        if tp > 2:
            what, tp = ("tensor", tp // 2), tp // 2
        elif pp > 2:
            what, pp = ("pipeline", pp // 2), pp // 2
        elif dp > 1:
            what, dp = ("data", 1), 1
        elif tp > 1:
            what, tp = ("tensor", 1), 1
        else:
            what, pp = ("pipeline", 1), 1
        notes.append(f"{what[0]} parallelism -> {what[1]}: the layout needed more than {max_ranks} ranks")
    return tp, pp, dp, notes


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} of nested plain data (lists are leaves)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: data}


def changed_fields(before: RunConfig, after: RunConfig) -> list[Change]:
    """Every leaf field whose value differs (a section that appears or disappears counts by leaf)."""
    a, b = flatten(to_data(before)), flatten(to_data(after))
    paths = sorted(set(a) | set(b))
    return [Change(p, a.get(p), b.get(p)) for p in paths if a.get(p) != b.get(p)]


def _set(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value


def shrink(config: RunConfig, out_dir: str, *, model_dir: str, classifier_dir: str | None, data_dir: str,
           max_ranks: int = 4, float32: bool = False) -> Plan:
    """The CPU rehearsal of `config` (a loaded recipe): only `SHRINKABLE` fields change.
    `float32`: run in float32 instead of the recipe's dtype (a slow-bf16 CPU)."""
    data = to_data(config)
    m, e = config.model, config.rollout.engine.tensor_parallel_size
    recipe_dp = max(1, config.plan.world // m.model_parallel_size)
    tp, pp, dp, notes = reduce_layout(m.tensor_parallel, m.pipeline_parallel, recipe_dp, max_ranks)
    world = tp * pp * dp
    sets: dict[str, Any] = {
        "model.hf_dir": model_dir, "model.init_checkpoint": None, "model.tokenizer": None,
        "model.tensor_parallel": tp, "model.pipeline_parallel": pp,
        "model.spec": "portable" if m.spec == "te" else m.spec, "model.fp8": None,
    }
    if pp == 1:
        sets["model.virtual_pipeline_stages"] = None
    if tp == 1:
        sets["model.sequence_parallel"] = False
    if world % e:
        sets["rollout.engine.tensor_parallel_size"] = math.gcd(e, world)
        notes.append(f"engine tensor parallelism {e} -> {math.gcd(e, world)}: it must divide the {world} ranks")
    engines = world // sets.get("rollout.engine.tensor_parallel_size", e)
    prompts = max(2, engines)
    sets.update({
        "rollout.group_size": 2, "rollout.engine.enable_sleep_mode": False,
        "rollout.engine.kv_cache_memory_bytes": KV_CACHE_BYTES, "rollout.engine.enforce_eager": True,
        "rollout.verify_every": 1,
        "reward.num_workers": min(config.reward.num_workers, 1),
        "data.demo_file": f"{data_dir}/toy_demos.jsonl", "data.rl_prompt_file": f"{data_dir}/toy_rl_prompts.jsonl",
        "data.prompts_per_step": prompts, "data.demos_per_step": prompts,
        **CPU_CAPS,
    })
    multiple = token_multiple(tp, m.sequence_parallel and tp > 1, None, m.fp8_recipe)
    longest = CPU_CAPS["data.max_prompt_tokens"] + max(CPU_CAPS["data.max_response_tokens"],
                                                      CPU_CAPS["rollout.sampling.max_tokens"])
    sets["train.micro_batch_tokens"] = -(-max(longest, 128) // multiple) * multiple
    if config.discriminator.frozen is not None:
        sets["discriminator.frozen.path"] = classifier_dir
        if config.discriminator.frozen.device.startswith("cuda"):
            sets["discriminator.frozen.device"] = "cpu"
    if config.discriminator.cotrained_init is not None:
        sets["discriminator.cotrained_init"] = model_dir
    if config.train.device == "cuda":
        sets["train.device"] = "auto"
    if "->" in config.objective.variant:
        sets["objective.first_stage_steps"] = 1
    if float32:
        sets.update({"model.dtype": "float32", "rollout.engine.dtype": "float32"})
    sets.update(_run_fields(out_dir))
    for path, value in sets.items():
        _set(data, path, value)
    shrunk = build(RunConfig, data).validate()
    return Plan(shrunk, world, changed_fields(config, shrunk), notes)


def _run_fields(out_dir: str) -> dict[str, Any]:
    return {"train.steps": STEPS, "checkpoint.every": CHECKPOINT_AT, "checkpoint.dir": None,
            "checkpoint.resume": "auto", "logging.run_dir": out_dir, "logging.wandb_mode": "disabled",
            "logging.progress_bar": False, "logging.log_every": 1}


def full_size(config: RunConfig, out_dir: str, world: int) -> Plan:
    """The GPU smoke run of `config`: the recipe at full size, only its length and output changed."""
    data = to_data(config)
    for path, value in {**_run_fields(out_dir), "rollout.verify_every": 1}.items():
        _set(data, path, value)
    run = build(RunConfig, data).validate()
    run.check_world(world)
    return Plan(run, world, changed_fields(config, run))
