"""Everything a training run holds, built from its `RunConfig`: model chunks, optimizer, rollout
engine and co-location schedule, discriminator, data streams, and the resume from a checkpoint.

`train.py` keeps only the algorithm; this module answers "where does each part come from".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

from megatron_uniapl import parallel, preflight
from megatron_uniapl.checkpoint import resume
from megatron_uniapl.checkpoint.resume import save  # noqa: F401 - the loop saves through runtime
from megatron_uniapl.checkpoint.state import RNGStreams, Stateful
from megatron_uniapl.checkpoint.writer_process import shield_writer_helper
from megatron_uniapl.config.objective import ObjectiveConfig
from megatron_uniapl.config.sections import RunConfig
from megatron_uniapl.config.yaml_io import ConfigError
from megatron_uniapl.data import stream as streams
from megatron_uniapl.data.schemas import Demonstration, RLPrompt
from megatron_uniapl.data.stream import OverlongCounter, RecordStream
from megatron_uniapl.discriminator.base import CoTrainable, Discriminator
from megatron_uniapl.model.hf_config import Qwen3Arch, load_qwen3_arch
from megatron_uniapl.nonfinite import LoopState
from megatron_uniapl.tokenizer import Tokenizer, check_vocab, load_tokenizer

if TYPE_CHECKING:
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import MegatronOptimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron_uniapl.model.stage_schedule import StagedLRSchedule

    from megatron_uniapl.colocation.phases import ColocationScheduler
    from megatron_uniapl.rewards.reward import RewardPool
    from megatron_uniapl.rollout.engine_layout import EngineGroups
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
    lr_schedule: OptimizerParamScheduler | StagedLRSchedule
    """The learning-rate (and weight-decay) schedule, stepped after each applied update: one
    over the run, or one per stage when stages set their own learning rate (`begin_step`)."""
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
    engine_groups: EngineGroups | None = None
    """Which ranks form this rank's engine and which prompts it serves; the rollout gather."""
    reward_pool: RewardPool | None = None
    """This rank's reward-checking processes (reward.num_workers > 0)."""
    colocation: ColocationScheduler | None = None
    """The train/generate phase machine around the engine."""
    weight_sync: MegatronWeightSync | None = None
    """Pushes the trainer's weights into the engine."""
    discriminator: Discriminator | None = None
    """Scores responses against the expert's; `CoTrainable` ones also learn each step."""
    loop: LoopState = field(default_factory=LoopState)
    """The loop's counters: steps finished and the current non-finite streak."""
    eval_prompts: list = field(default_factory=list)
    """Held-out prompts of `eval.every` (empty when off), with `eval_prompt_ids` their token ids."""
    eval_prompt_ids: list[list[int]] = field(default_factory=list)
    """The eval prompts templated as rollouts are."""

    @property
    def step(self) -> int:
        """Optimizer steps finished (the next step's index)."""
        return self.loop.step

    @step.setter
    def step(self, value: int) -> None:
        self.loop.step = value

    @property
    def modules(self) -> list:
        """The model chunks without their DDP wrappers (what conversion and sync read)."""
        return [getattr(c, "module", c) for c in self.chunks]

    def parts(self) -> dict[str, Stateful]:
        """The run-wide resumable parts, saved once (rank 0) as plain data: {name: part}."""
        out: dict[str, Stateful] = {"loop": self.loop, "lr_schedule": self.lr_schedule}
        if self.demo_stream is not None:
            out["demo_stream"] = self.demo_stream
        if self.rl_stream is not None:
            out["rl_stream"] = self.rl_stream
        return out

    def rank_parts(self) -> dict[str, Stateful]:
        """Each rank's own resumable parts: its RNG streams, and the co-trained discriminator's
        tensor-parallel shard with its optimizer."""
        out: dict[str, Stateful] = {"rng": RNGStreams()}
        if isinstance(self.discriminator, CoTrainable):
            out["discriminator"] = self.discriminator
        return out


def begin_step(rt: Runtime) -> None:
    """Before the optimizer step `rt.step`: at a stage's first step, switch to the stage's own
    learning-rate schedule, and reset the optimizer's moments and refresh the KL reference where
    the stage asks for it. All depend only on the step, so a run resumed at a stage boundary does
    the same. Collective."""
    from megatron_uniapl.model.stage_schedule import StagedLRSchedule, reset_optimizer_state

    if isinstance(rt.lr_schedule, StagedLRSchedule) and rt.lr_schedule.enter(rt.step):
        logger.info("step %d: stage schedule %d begins (peak learning rate %g)", rt.step + 1,
                    rt.lr_schedule.index, rt.lr_schedule.plan[rt.lr_schedule.index].lr)
    stage, local = rt.objective.stage_at(rt.step)
    if local != 0 or rt.step == 0:
        return
    if stage.reset_optimizer:
        zeroed = reset_optimizer_state(rt.optimizer)
        logger.info("step %d: stage %r begins with fresh optimizer moments (%d tensors zeroed)",
                    rt.step + 1, stage.name, zeroed)
    if stage.refresh_reference:
        from megatron_uniapl.checkpoint import reference

        keep = rt.config.checkpoint_dir if rt.config.checkpoint.enabled else None
        reference.refresh(rt.chunks, rt.reference_chunks, keep, rt.step)


def _model_dir(config: RunConfig) -> Path:
    hf_dir = Path(config.model.hf_dir)
    if config.model.create_tiny and not (hf_dir / "config.json").is_file():
        from megatron_uniapl.model.tiny import create_tiny_qwen3, record_run_seed

        if not dist.is_initialized() or dist.get_rank() == 0:
            logger.info("creating a tiny random Qwen3 with the real tokenizer in %s", hf_dir)
            create_tiny_qwen3(hf_dir, seed=config.train.seed)
            record_run_seed(hf_dir, config.train.seed)
        if dist.is_initialized():
            dist.barrier()
    return hf_dir


def build_policy(config: RunConfig, arch: Qwen3Arch, hf_dir: Path, frozen: bool = False,
                 load_weights: bool = True) -> list:
    """Model chunks of this rank (DDP-wrapped unless frozen), initialized from HF or a checkpoint;
    `load_weights=False` leaves them uninitialized (a resume overwrites every weight anyway)."""
    from megatron.core import parallel_state

    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.mcore_checkpoint import load_model_weights
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.distributed import wrap_ddp

    options = config.model if load_weights else replace(config.model, perform_initialization=False)
    vpp = options.virtual_pipeline_stages
    chunks = [build_qwen3_model(arch, options, vp_stage=v if vpp else None) for v in range(vpp or 1)]
    if not load_weights:
        pass
    elif config.model.init_checkpoint:
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


def _cotrained_discriminator(config: RunConfig, tokenizer, load_weights: bool = True):
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
    module = build_megatron_discriminator(load_qwen3_arch(init), options, hf_dir=init if load_weights else None,
                                          head_seed=config.train.seed)
    return CoTrainedDiscriminator(module, config.discriminator.cotrained, tokenizer=tokenizer)


def _discriminator(config: RunConfig, uses_it: bool, tokenizer, load_weights: bool = True):
    kind = config.discriminator.kind
    if not uses_it or kind == "none":
        return None
    if kind == "overlap":
        from megatron_uniapl.discriminator.overlap import OverlapF1Scorer

        o = config.discriminator.overlap
        return OverlapF1Scorer(case_sensitive=o.case_sensitive, punctuation=o.punctuation)
    if kind == "frozen":
        from megatron_uniapl.discriminator.frozen import FrozenRewardModel

        return FrozenRewardModel(config.discriminator.frozen)
    return _cotrained_discriminator(config, tokenizer, load_weights)


def build_runtime(config: RunConfig, plan: preflight.Plan | None = None) -> Runtime:
    """Collective. Initializes the parallel state and builds every part of the run, resuming from
    `plan` (the pre-flight checks' result; run here when not given)."""
    from megatron.core import parallel_state

    from megatron_uniapl.model.distributed import build_optimizer

    plan = plan or preflight.check_run(config)
    m = config.model
    parallel.initialize(m.tensor_parallel, m.pipeline_parallel, m.virtual_pipeline_stages, m.context_parallel,
                        seed=config.train.seed, device=config.train.device,
                        timeout_s=config.train.process_group_timeout_s)
    dp_size = config.check_world(dist.get_world_size())
    objective = config.objective_config()
    hf_dir = _model_dir(config)
    arch = load_qwen3_arch(hf_dir)
    config.check_arch(arch.num_attention_heads, arch.num_key_value_heads, arch.num_layers)
    tokenizer = load_tokenizer(config.model.tokenizer or hf_dir)
    try:
        check_vocab(tokenizer.vocab_size, arch.vocab_size, where=str(config.model.tokenizer or hf_dir))
    except ValueError as err:
        raise ConfigError(f"model.tokenizer: {err}") from None
    _check_usable(config, tokenizer, plan)
    eval_ids = []
    if plan.eval_prompts:
        from megatron_uniapl.eval.periodic import encode_eval_prompts

        try:
            eval_ids = encode_eval_prompts(tokenizer, plan.eval_prompts, config.eval_max_tokens,
                                           config.rollout.engine.max_model_len)
        except ValueError as err:
            raise ConfigError(f"eval.max_tokens: {err}") from None

    stages = objective.stages
    # A resume overwrites every weight: skip reading the initial ones (minutes at 32B).
    fresh = not plan.resuming
    chunks = build_policy(config, arch, hf_dir, load_weights=fresh)
    # Learning-rate schedules count optimizer updates: train.mini_batches x train.epochs per step.
    updates = config.train.updates_per_step
    optimizer, lr_schedule = build_optimizer(chunks, optimizer_settings(config), total_steps=config.train.steps * updates)
    lr_plan = config.lr_plan()
    if lr_plan is not None:
        from megatron_uniapl.model.stage_schedule import StagedLRSchedule

        o = config.optimizer
        lr_schedule = StagedLRSchedule(optimizer, lr_plan, o.decay, o.weight_decay, base_lr=o.lr,
                                       updates_per_step=updates)
    reference = build_policy(config, arch, hf_dir, frozen=True) if any(s.beta > 0 for s in stages) else None
    rt = Runtime(
        config=config, objective=objective, arch=arch, tokenizer=tokenizer, chunks=chunks,
        optimizer=optimizer, lr_schedule=lr_schedule, dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=dp_size, demo_stream=plan.demo_stream, rl_stream=plan.rl_stream, reference_chunks=reference,
        eval_prompts=list(plan.eval_prompts), eval_prompt_ids=eval_ids,
        discriminator=_discriminator(config, any(s.uses_discriminator for s in stages), tokenizer, load_weights=fresh),
    )
    resume.restore(rt, plan.resume_from)
    if reference is not None and plan.resuming:
        from megatron_uniapl.checkpoint import reference as reference_store

        reference_store.restore(reference, config.checkpoint_dir, objective.refreshes_before(rt.step))
    if config.checkpoint.enabled:  # now, while there is nothing to save (checkpoint/writer_process.py)
        shield_writer_helper()
    if any(s.uses_rollouts for s in stages):
        _start_engine(rt, hf_dir)
        if config.reward.num_workers > 0:
            from megatron_uniapl.rewards.reward import RewardPool

            rt.reward_pool = RewardPool(config.reward.num_workers)
    return rt


def _check_usable(config: RunConfig, tokenizer, plan: preflight.Plan) -> None:
    """DataError now, not at the first step, when every record is over the length limits."""
    d = config.data
    counter = OverlongCounter()
    if plan.demo_stream is not None:
        streams.check_usable(plan.demo_stream, lambda r: streams.encode_demonstration(
            tokenizer, r, d.max_prompt_tokens, d.max_response_tokens, d.overlong, counter),
            f"data.max_prompt_tokens={d.max_prompt_tokens} or data.max_response_tokens={d.max_response_tokens}")
    if plan.rl_stream is not None:
        streams.check_usable(plan.rl_stream, lambda r: streams.encode_rl_prompt(
            tokenizer, r, d.max_prompt_tokens, d.overlong, counter), f"data.max_prompt_tokens={d.max_prompt_tokens}")


def _start_engine(rt: Runtime, hf_dir: Path) -> None:
    from megatron_uniapl.colocation.megatron_state import megatron_train_state
    from megatron_uniapl.colocation.phases import ColocationScheduler
    from megatron_uniapl.rollout.engine_layout import EngineGroups
    from megatron_uniapl.rollout.megatron_sync import MegatronWeightSync
    from megatron_uniapl.rollout.megatron_verify import SyncVerifier
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    rt.engine_groups = EngineGroups(rt.config.rollout.engine.tensor_parallel_size)
    # Placeholder weights, version -1 ("not the trainer's yet"): the first rollout always pushes
    # the trainer's weights, after a resume too, so reading the checkpoint would be wasted.
    rt.engine = VLLMEngine(hf_dir, rt.config.rollout.engine, weight_version=-1, dummy_weights=True)
    rt.weight_sync = MegatronWeightSync(rt.modules, rt.arch)
    rt.colocation = ColocationScheduler(
        rt.engine, megatron_train_state(rt.chunks, rt.optimizer), trainer_version=lambda: rt.step,
        sync_check=SyncVerifier.for_run(rt.config, rt.modules, rt.arch.vocab_size),
    )


def shutdown(rt: Runtime) -> None:
    if rt.reward_pool is not None:
        rt.reward_pool.close()
    if rt.engine is not None:
        rt.engine.shutdown()
    parallel.destroy()
