"""What a run checks before it creates process groups, models or engines.

A mistake found at step N costs the start-up of every rank, N steps, and (on resume) the same
again; found here it costs a second and names the file, line or field. In order:
- that the machine can run what the configuration asks (a GPU for `train.device=cuda`, TE, FP8);
- the parallel layout against the world size and the model's heads and layers;
- the data files, record by record (`file:line: field: problem`), and that every RL prompt has
  the expert reference a discriminator scores against; the held-out file of `eval.every` too;
- the checkpoint to resume from: its marker must describe this model and these optimizer
  settings, and the data files must have the record counts it was taken with;
- whether the run is already complete (then nothing starts);
- that the run and checkpoint directories are writable and hold room for a checkpoint.
Rank 0 also removes what interrupted saves and prunes left behind.

Everything here is a pure function of the configuration and the files, so every rank reaches
the same verdict without communicating.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from megatron_uniapl.checkpoint import layout, resume, storage
from megatron_uniapl.config.sections import RunConfig
from megatron_uniapl.config.yaml_io import ConfigError
from megatron_uniapl.data.schemas import read_demonstrations, read_eval_set, read_rl_prompts
from megatron_uniapl.data.stream import RecordStream
from megatron_uniapl.device import check_run as check_device
from megatron_uniapl.model.tiny import tiny_model_seed

logger = logging.getLogger(__name__)

PARAM_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Plan:
    """What the checks found: the data, and where the run continues from."""

    demo_stream: RecordStream | None
    """Demonstrations (None when no stage uses them)."""
    rl_stream: RecordStream | None
    """RL prompts (None when no stage rolls them out)."""
    resume_from: list[Path] = field(default_factory=list)
    """Checkpoints to try, newest first; empty for a fresh start."""
    resume_step: int = 0
    """Step of the newest candidate (0 for a fresh start)."""
    eval_prompts: list = field(default_factory=list)
    """Held-out prompts for `eval.every` (`EvalPrompt`s; empty when evaluation is off)."""

    @property
    def resuming(self) -> bool:
        return bool(self.resume_from)


def env_world() -> tuple[int, int]:
    """(rank, world size) as the launcher set them (a single process: 0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def read_data(config: RunConfig) -> tuple[RecordStream | None, RecordStream | None]:
    """The data streams the objective needs, every record validated."""
    stages = config.objective_config().stages
    d = config.data
    uses_demos = any(s.uses_demos or s.rollout_prompts == "demo" for s in stages)
    uses_rl = any(s.rollout_prompts == "rl" for s in stages)
    scores_rl = any(s.uses_discriminator and s.rollout_prompts == "rl" for s in stages)
    why = (f"discriminator.kind={config.discriminator.kind} scores every RL rollout against the expert "
           f"reference of its prompt") if scores_rl else None
    demos = RecordStream(read_demonstrations(d.demo_file), config.data_seed, d.demo_file) if uses_demos else None
    prompts = (RecordStream(read_rl_prompts(d.rl_prompt_file, require_reference=why), config.data_seed + 1,
                            d.rl_prompt_file) if uses_rl else None)
    return demos, prompts


def read_eval(config: RunConfig) -> list:
    """The held-out prompts of `eval.file` (validated record by record), the first `eval.limit`
    of them; empty when `eval.every` is 0."""
    if not config.eval.every:
        return []
    prompts = read_eval_set(config.eval.file)
    return prompts[:config.eval.limit] if config.eval.limit is not None else prompts


def _arch(config: RunConfig):
    from megatron_uniapl.model.hf_config import load_qwen3_arch

    hf_dir = Path(config.model.hf_dir)
    return load_qwen3_arch(hf_dir) if (hf_dir / "config.json").is_file() else None


def check_tiny_model(config: RunConfig) -> None:
    """With `model.create_tiny`, a tiny model an earlier run created must have been drawn with
    `train.seed`: reusing another seed's model would make the seed vary sampling but not the
    initial weights, which a comparison over seeds cannot tell from the method's own spread."""
    hf_dir = Path(config.model.hf_dir)
    if not config.model.create_tiny or not (hf_dir / "config.json").is_file():
        return
    seed = tiny_model_seed(hf_dir)  # None: a model the user put there, used as it is
    if seed is not None and seed != config.train.seed:
        raise ConfigError(
            f"model.hf_dir={hf_dir} holds a tiny model drawn with seed {seed} (model.create_tiny), but "
            f"train.seed is {config.train.seed}: set model.hf_dir to a directory for this seed (it is "
            f"created there), or delete {hf_dir}")


def check_storage(config: RunConfig, arch, newest: Path | None) -> None:
    """Writable run and checkpoint directories, and free space for one more checkpoint (the size
    of the newest one, or an estimate from the model's parameter count); with checkpoints off,
    the run directory only (the checkpoint directory is not even created)."""
    storage.check_writable(config.logging.run_dir, "logging.run_dir")
    if not config.checkpoint.enabled:  # a run that writes no checkpoint (e.g. a scaling study)
        return
    storage.check_writable(config.checkpoint_dir, "checkpoint.dir")
    if newest is not None:
        need = storage.directory_bytes(newest)
    elif arch is not None:
        need = storage.checkpoint_bytes_estimate(arch.num_parameters, PARAM_BYTES[config.model.dtype], True)
    else:
        return  # the model is created at start (model.create_tiny): nothing to estimate from yet
    storage.check_free_space(config.checkpoint_dir, need, "checkpoint.dir")


def check_run(config: RunConfig, rank: int | None = None, world: int | None = None) -> Plan:
    """Run every check; raises ConfigError, DataError, CheckpointError or DeviceError with the one
    line to show."""
    check_device(config)  # GPU-only settings on a machine without a usable GPU: stop now, say why
    env_rank, env_size = env_world()
    rank = env_rank if rank is None else rank
    config.check_world(env_size if world is None else world)
    check_tiny_model(config)
    demos, prompts = read_data(config)
    if rank == 0:
        layout.clean_leftovers(config.checkpoint_dir)
    arch = _arch(config)
    paths = resume.candidates(config)
    plan = Plan(demos, prompts, paths, eval_prompts=read_eval(config))
    for path in paths:  # the first readable one; resume falls back the same way
        try:
            marker = layout.read_marker(path)
            resume.check_compatible(path, marker, config, arch)
            resume.check_data_sizes(path, {"demo_stream": demos, "rl_stream": prompts})
        except layout.UnreadableCheckpointError as err:
            logger.warning("%s; an older checkpoint will be tried", err)
            continue
        plan.resume_step = int(marker["step"])
        break
    if plan.resume_step < config.train.steps:
        check_storage(config, arch, paths[0] if paths else None)
    return plan


def is_complete(config: RunConfig, plan: Plan) -> bool:
    return plan.resuming and plan.resume_step >= config.train.steps
