"""Everything a training run holds, built from its `RunConfig`: model chunks, optimizer, rollout
engine and co-location schedule, discriminator, data streams, and the resume from a checkpoint.

`train.py` keeps only the algorithm; this module answers "where does each part come from".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

from megatron_uniapl import checkpoint as ckpt
from megatron_uniapl import parallel
from megatron_uniapl.config.objective import ObjectiveConfig
from megatron_uniapl.config.sections import RunConfig
from megatron_uniapl.data.schemas import (
    Demonstration,
    RLPrompt,
    read_demonstrations,
    read_rl_prompts,
)
from megatron_uniapl.data.stream import OverlongCounter, RecordStream
from megatron_uniapl.discriminator.base import CoTrainable, Discriminator
from megatron_uniapl.model.hf_config import Qwen3Arch, load_qwen3_arch
from megatron_uniapl.tokenizer import Tokenizer, check_vocab, load_tokenizer

if TYPE_CHECKING:
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import MegatronOptimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron_uniapl.colocation.phases import ColocationScheduler
    from megatron_uniapl.rollout.megatron_sync import MegatronWeightSync
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The live parts of a run (what `build_runtime` makes and the loop reads)."""

    config: RunConfig
    """The validated run configuration."""
    objective: ObjectiveConfig
    """The objective's stages and weights per step."""
    arch: Qwen3Arch
    """The model architecture (from the HF config.json)."""
    tokenizer: Tokenizer
    """The tokenizer matching the model's vocabulary."""
    chunks: list[DistributedDataParallel]
    """DDP-wrapped model chunks of this rank's pipeline stage (one per virtual stage)."""
    optimizer: MegatronOptimizer
    """Megatron's optimizer over `chunks` (distributed or not)."""
    lr_schedule: OptimizerParamScheduler
    """The learning-rate (and weight-decay) schedule, stepped after each applied update."""
    dp_rank: int
    """This rank's data-parallel index."""
    dp_size: int
    """Number of data-parallel replicas."""
    demo_stream: RecordStream[Demonstration] | None
    """Demonstrations in a resumable order (None when no stage uses them)."""
    rl_stream: RecordStream[RLPrompt] | None
    """RL prompts in a resumable order (None when no stage rolls out on them)."""
    overlong: OverlongCounter = field(default_factory=OverlongCounter)
    """Records skipped or truncated for length."""
    reference_chunks: list[GPTModel] | None = None
    """Frozen reference policy for the KL term (None when beta = 0 throughout)."""
    engine: VLLMEngine | None = None
    """The co-located rollout engine (None for SFT-only runs)."""
    colocation: ColocationScheduler | None = None
    """The train/generate phase machine around the engine."""
    weight_sync: MegatronWeightSync | None = None
    """Pushes the trainer's weights into the engine."""
    discriminator: Discriminator | None = None
    """Scores responses against the expert's; `CoTrainable` ones also learn each step."""
    step: int = 0
    """Optimizer steps finished (the next step's index)."""
    nonfinite_in_a_row: int = 0
    """Consecutive steps skipped for non-finite gradients."""

    @property
    def modules(self) -> list:
        """The model chunks without their DDP wrappers (what conversion and sync read)."""
        return [getattr(c, "module", c) for c in self.chunks]

    def common_state(self) -> dict:
        return {
            "step": self.step,
            "scheduler": self.lr_schedule.state_dict(),
            "demo_stream": self.demo_stream.state_dict() if self.demo_stream else None,
            "rl_stream": self.rl_stream.state_dict() if self.rl_stream else None,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "model_config": self.arch.__dict__,
        }


def _model_dir(config: RunConfig) -> Path:
    hf_dir = Path(config.model.hf_dir)
    if config.model.create_tiny and not (hf_dir / "config.json").is_file():
        from megatron_uniapl.model.tiny import create_tiny_qwen3

        if not dist.is_initialized() or dist.get_rank() == 0:
            logger.info("creating a tiny random Qwen3 with the real tokenizer in %s", hf_dir)
            create_tiny_qwen3(hf_dir, seed=config.train.seed)
        if dist.is_initialized():
            dist.barrier()
    return hf_dir


def build_policy(config: RunConfig, arch: Qwen3Arch, hf_dir: Path, frozen: bool = False) -> list:
    """Model chunks of this rank (DDP-wrapped unless frozen), initialized from HF or a checkpoint."""
    from megatron.core import parallel_state

    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.mcore_checkpoint import load_model_weights
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.distributed import wrap_ddp

    options = config.model
    vpp = options.virtual_pipeline_stages
    chunks = [build_qwen3_model(arch, options, vp_stage=v if vpp else None) for v in range(vpp or 1)]
    if config.model.init_checkpoint:
        load_model_weights(chunks, Path(config.model.init_checkpoint) / "weights")
    else:
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        with HFCheckpointReader(hf_dir) as reader:
            for chunk in chunks:
                load_hf_into_model(chunk, reader, arch, tp_rank, options.tensor_parallel)
    if frozen:
        for chunk in chunks:
            chunk.eval()
            chunk.requires_grad_(False)
        return chunks
    return wrap_ddp(chunks, optimizer_settings(config))


def optimizer_settings(config: RunConfig):
    from megatron_uniapl.model.distributed import OptimizerSettings

    o = config.optimizer
    return OptimizerSettings(
        lr=o.lr, min_lr=o.min_lr, warmup_steps=o.warmup_steps, decay_style=o.decay,
        weight_decay=o.weight_decay, adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_eps=o.eps,
        clip_grad=o.clip_grad, use_distributed_optimizer=o.use_distributed_optimizer,
    )


def _cotrained_discriminator(config: RunConfig, tokenizer):
    """A Qwen3 classifier on the Megatron model code, sharded like the policy (TP only)."""
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.discriminator.cotrained import CoTrainedDiscriminator
    from megatron_uniapl.discriminator.megatron_backbone import (
        build_megatron_discriminator,
    )

    init = config.discriminator.cotrained_init
    m = config.model
    options = ModelOptions(tensor_parallel=m.tensor_parallel, dtype=m.dtype, spec=m.spec,
                           use_cpu_initialization=m.use_cpu_initialization)
    module = build_megatron_discriminator(load_qwen3_arch(init), options, hf_dir=init, head_seed=config.train.seed)
    return CoTrainedDiscriminator(module, config.discriminator.cotrained, tokenizer=tokenizer)


def _discriminator(config: RunConfig, uses_it: bool, tokenizer):
    kind = config.discriminator.kind
    if not uses_it or kind == "none":
        return None
    if kind == "overlap":
        from megatron_uniapl.discriminator.overlap import OverlapF1Scorer

        return OverlapF1Scorer()
    if kind == "frozen":
        from megatron_uniapl.discriminator.frozen import FrozenRewardModel

        return FrozenRewardModel(config.discriminator.frozen)
    return _cotrained_discriminator(config, tokenizer)


def build_runtime(config: RunConfig) -> Runtime:
    """Collective. Initializes the parallel state and builds every part of the run."""
    from megatron_uniapl.device import check_run

    check_run(config)  # GPU-only settings on a machine without a usable GPU: stop now, say why
    from megatron.core import parallel_state

    from megatron_uniapl.model.distributed import build_optimizer

    m = config.model
    parallel.initialize(m.tensor_parallel, m.pipeline_parallel, m.virtual_pipeline_stages, m.context_parallel,
                        seed=config.train.seed, device=config.train.device)
    dp_size = config.check_world(dist.get_world_size())
    objective = config.objective_config()
    hf_dir = _model_dir(config)
    arch = load_qwen3_arch(hf_dir)
    tokenizer = load_tokenizer(config.model.tokenizer or hf_dir)
    check_vocab(tokenizer.vocab_size, arch.vocab_size, where=str(config.model.tokenizer or hf_dir))

    stages = objective.stages
    uses_demos = any(s.uses_demos or s.rollout_prompts == "demo" for s in stages)
    uses_rl = any(s.rollout_prompts == "rl" for s in stages)
    seed = config.data.shuffle_seed
    demo_stream = RecordStream(read_demonstrations(config.data.demo_file), seed, config.data.demo_file) if uses_demos else None
    rl_stream = RecordStream(read_rl_prompts(config.data.rl_prompt_file), seed + 1, config.data.rl_prompt_file) if uses_rl else None

    chunks = build_policy(config, arch, hf_dir)
    optimizer, lr_schedule = build_optimizer(chunks, optimizer_settings(config), total_steps=config.train.steps)
    reference = build_policy(config, arch, hf_dir, frozen=True) if any(s.beta > 0 for s in stages) else None
    rt = Runtime(
        config=config, objective=objective, arch=arch, tokenizer=tokenizer, chunks=chunks,
        optimizer=optimizer, lr_schedule=lr_schedule, dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=dp_size, demo_stream=demo_stream, rl_stream=rl_stream, reference_chunks=reference,
        discriminator=_discriminator(config, any(s.uses_discriminator for s in stages), tokenizer),
    )
    _resume(rt)
    if any(s.uses_rollouts for s in stages):
        _start_engine(rt, hf_dir)
    return rt


def _start_engine(rt: Runtime, hf_dir: Path) -> None:
    from megatron_uniapl.colocation.megatron_state import megatron_train_state
    from megatron_uniapl.colocation.phases import ColocationScheduler
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronWeightSync,
        check_engine_layout,
    )
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    check_engine_layout(rt.config.rollout.engine.tensor_parallel_size)
    # The engine starts from the HF weights (version -1 = "not the trainer's yet"): the first
    # rollout always pushes the trainer's weights, after a resume too.
    rt.engine = VLLMEngine(hf_dir, rt.config.rollout.engine, weight_version=-1)
    rt.weight_sync = MegatronWeightSync(rt.modules, rt.arch)
    rt.colocation = ColocationScheduler(
        rt.engine, megatron_train_state(rt.chunks, rt.optimizer), trainer_version=lambda: rt.step
    )


def _resume(rt: Runtime) -> None:
    """Load the checkpoint `checkpoint.resume` asks for: auto (latest, if any), none, or a path."""
    mode = rt.config.checkpoint.resume
    if mode == "none":
        if ckpt.complete_iterations(rt.config.checkpoint_dir):
            raise ckpt.CheckpointError(
                f"checkpoint.resume=none but {rt.config.checkpoint_dir} already holds checkpoints; "
                f"use resume=auto to continue, or another logging.run_dir / checkpoint.dir"
            )
        return
    path = ckpt.latest_checkpoint(rt.config.checkpoint_dir) if mode == "auto" else Path(mode)
    if path is None:
        return
    state, common, marker = ckpt.load_checkpoint(path, ckpt.training_sharded_state(rt.chunks, rt.optimizer, is_loading=True))
    if common["model_config"] != rt.arch.__dict__:
        raise ckpt.CheckpointError(f"{path} was written for another model architecture than {rt.config.model.hf_dir}")
    ckpt.apply_training_state(state, rt.chunks, rt.optimizer)
    if isinstance(rt.discriminator, CoTrainable):
        per_rank = ckpt.load_rank_state(path)
        if per_rank is None or "discriminator" not in per_rank:
            raise ckpt.CheckpointError(f"{path} holds no co-trained discriminator state for this rank")
        rt.discriminator.load_state_dict(per_rank["discriminator"])
    rt.lr_schedule.load_state_dict(common["scheduler"])
    rt.step = common["step"]
    rt.nonfinite_in_a_row = common["nonfinite_in_a_row"]
    if rt.demo_stream and common["demo_stream"]:
        rt.demo_stream.load_state_dict(common["demo_stream"])
    if rt.rl_stream and common["rl_stream"]:
        rt.rl_stream.load_state_dict(common["rl_stream"])
    logger.info("resumed from %s at step %d", path, rt.step)


def _model_files(rt: Runtime):
    """Writes what makes a training checkpoint also a model checkpoint: the HF config and
    tokenizer and `uniapl_model.json`, so `tools/convert_hf.py export --mcore-dir iter_XXXXXXX`
    (and `tools/eval.py`) accept it directly."""
    import json

    from megatron_uniapl.convert import mcore_checkpoint as model_ckpt

    def write(stage: Path) -> None:
        hf_dir = Path(rt.config.model.hf_dir)
        model_ckpt.write_model_files(stage, hf_dir, json.loads((hf_dir / "config.json").read_text()),
                                     getattr(rt.modules[0], "uniapl_spec", "portable"), rt.config.model)

    return write


def save(rt: Runtime) -> None:
    ckpt.save_checkpoint(
        rt.config.checkpoint_dir, rt.step, ckpt.training_sharded_state(rt.chunks, rt.optimizer),
        rt.common_state(), keep_last=rt.config.checkpoint.keep_last, meta={"run": rt.config.name},
        write_extra=_model_files(rt),
        # The co-trained discriminator is sharded like the policy (TP): each rank keeps its own.
        per_rank={"discriminator": rt.discriminator.state_dict()} if isinstance(rt.discriminator, CoTrainable) else None,
    )


def shutdown(rt: Runtime) -> None:
    if rt.engine is not None:
        rt.engine.shutdown()
    parallel.destroy()
