"""The sections of a run's configuration (one dataclass each, one docstring per field) and `RunConfig`.

A run is described by a YAML recipe (`recipes/*.yaml`) plus command-line overrides:

    python -m megatron_uniapl.train --config recipes/qwen3_4b.yaml optimizer.lr=2e-6

Sections reuse the dataclasses of the modules that consume them (`ModelOptions`,
`PolicyGradientConfig`, `MuSchedule`, `Stage`, `VLLMEngineConfig`, `SamplingConfig`, the
discriminator configs, `RewardMode`), so a field is documented once, where it is used. Loading,
recipe inheritance (`base:`), overrides and saving are in `config`; the generic
dict <-> dataclass conversion is in `config_io`. `RunConfig.validate()` runs each section's own
checks and the cross-section ones, and raises `ConfigError` with the field path.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from megatron_uniapl.config.discriminator import (
    CoTrainedDiscriminatorConfig,
    FrozenScorerConfig,
    OverlapScorerConfig,
)
from megatron_uniapl.config.lr_plan import StageLR, stage_lr_plan
from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.config.objective import (
    ObjectiveConfig,
    PolicyGradientConfig,
    Stage,
)
from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.config.rollout import (
    MAX_SAMPLES_PER_PROMPT,
    SamplingConfig,
    VLLMEngineConfig,
)
from megatron_uniapl.config.run import (
    CheckpointSection,
    EvalSection,
    LoggingSection,
    OptimizerSection,
    PlanSection,
    TrainSection,
)
from megatron_uniapl.config.schedule import MuSchedule
from megatron_uniapl.config.variants import VARIANTS, objective_for_variant
from megatron_uniapl.config.yaml_io import ConfigError


def _checked(where: str, check) -> None:
    """Run a section's own `validate`, turning its ValueError into a ConfigError."""
    try:
        check()
    except ConfigError:
        raise
    except ValueError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from err


@dataclass
class ModelSection(ModelOptions):
    """The model: where its weights come from, plus the parallel layout and precision."""

    hf_dir: str | None = None
    """Hugging Face Qwen3 directory (config.json, safetensors, tokenizer): the architecture,
    the initial weights when `init_checkpoint` is None, and the weights the engine starts from."""
    init_checkpoint: str | None = None
    """Megatron distributed checkpoint (from tools/convert_hf.py import) to start from instead of
    the HF weights; faster for large models. A resumed run ignores it."""
    tokenizer: str | None = None
    """Tokenizer directory; None uses `hf_dir`. Must match the model's vocabulary."""
    create_tiny: bool = False
    """If `hf_dir` holds no config.json, create a tiny random Qwen3 there (model/tiny.py, seeded
    by train.seed) with the real tokenizer: the CPU demo's model. Never set for real runs."""

    # validate() is ModelOptions.validate: a ModelSection is passed wherever ModelOptions is
    # (build_qwen3_model validates it), so the run-level check of hf_dir is in RunConfig.validate.


@dataclass
class ObjectiveSection:
    """The UniAPL objective: a paper variant with its parameters, or explicit stages."""

    variant: str = "uniapl"
    """A paper variant (config/variants.py: sft, a-sft, grpo, a-grpo, chord, a-chord, uniapl,
    sft->grpo, sft->a-grpo, a-sft->a-grpo, reward-shaping), or "custom" to give `stages`."""
    mu: float = 0.5
    """Fixed SFT weight of "uniapl" and "reward-shaping" (the task PG term gets 1 - mu)."""
    lambda_adv: float = 0.1
    """Weight of the adversarial policy-gradient term in the A- variants."""
    beta: float = 0.0
    """KL weight to the reference policy in every stage that rolls out; 0 = no reference model."""
    lambda_shape: float = 0.1
    """Reward-shaping coefficient of "reward-shaping" (how r and d are combined: `shape_norm`)."""
    shape_norm: str = "joint"
    """"joint" (the paper's ablation): A = groupnorm(r + lambda_shape * d), where lambda is
    cancelled in groups whose rewards are all equal; "per_term": A = groupnorm(r) +
    lambda_shape * groupnorm(d), where lambda weighs d the same in every group."""
    first_stage_steps: int = 100
    """Length in optimizer steps of the first stage of the staged variants (X->Y)."""
    first_stage_lr: float | None = None
    """Peak learning rate of the first stage of the staged variants; None: `optimizer.lr` with one
    schedule over the run. Set, each stage runs a schedule of its own and the second stage's
    peak is `optimizer.lr` (an SFT stage wants about 10x an RL stage's rate)."""
    reset_optimizer: bool = False
    """Staged variants: start the second stage with zeroed optimizer moments (a fresh Adam)."""
    refresh_reference: bool = False
    """Staged variants with beta > 0: the second stage's KL reference is the policy as it begins
    (the first stage's result), not the initial model."""
    chord: MuSchedule = field(default_factory=lambda: MuSchedule(kind="chord"))
    """The mu schedule of "chord" and "a-chord"."""
    stages: list[Stage] = field(default_factory=list)
    """Explicit stages, only with variant "custom"; the preset parameters above are then unused."""
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """Clipping, advantage normalization, TIS and KL estimator, shared by every stage."""

    def build(self) -> ObjectiveConfig:
        """The validated objective the loss consumes."""
        if self.variant == "custom":
            if not self.stages:
                raise ValueError("objective.variant is 'custom' but objective.stages is empty")
            return ObjectiveConfig("custom", [replace(s) for s in self.stages], replace(self.pg)).validate()
        if self.stages:
            raise ValueError(
                f"objective.stages is given but objective.variant is {self.variant!r}; set "
                f"objective.variant=custom to use explicit stages"
            )
        return objective_for_variant(
            self.variant, mu=self.mu, lambda_adv=self.lambda_adv, beta=self.beta,
            lambda_shape=self.lambda_shape, shape_norm=self.shape_norm, first_stage_steps=self.first_stage_steps,
            first_stage_lr=self.first_stage_lr, reset_optimizer=self.reset_optimizer,
            refresh_reference=self.refresh_reference,
            chord=replace(self.chord), pg=replace(self.pg),
        )


@dataclass
class RolloutSection:
    """The co-located vLLM engine and how it samples."""

    group_size: int = 8
    """Responses sampled per prompt (the GRPO group size G), for RL and A-SFT demo prompts."""
    engine: VLLMEngineConfig = field(default_factory=VLLMEngineConfig)
    """How the engine starts (its TP, memory share, max_model_len, sleep mode)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Temperature, top-p, max response tokens, stop strings. Leave `n` at 1: `group_size` sets it.
    Training rollouts need temperature > 0 and top_p 1; rollout tokens are trained on at the
    sampling temperature (docs/method.md)."""
    verify_every: int = 10
    """Check the engine against the trainer after every N-th weight sync (the 1st, the N+1-th,
    ...): both score the same fixed token sequences (one forward each) and the run stops with an
    error when the mean |engine - trainer| log-prob exceeds `verify_tolerance`, which means the
    engine is not serving the trainer's weights. The figures are logged as weight_sync/*. 0 = never."""
    verify_tolerance: float | None = None
    """Largest allowed mean |engine - trainer| log-prob of the check. None: by model.dtype,
    1e-3 for float32 (measured ~2e-6) and 0.1 for bfloat16/float16 (rounding differences between
    two kernel sets are ~1e-2; a wrong or partial sync is off by whole nats)."""

    dynamic_sampling_prompts: int = 0
    """Dynamic sampling: roll out this many RL prompts beyond `data.prompts_per_step` in steps
    with a task term, then keep `data.prompts_per_step` groups, those whose task rewards differ
    first (a group whose rewards are all equal has advantage 0 and teaches the task term
    nothing), filling up with equal ones in prompt order when too few differ, so the batch stays
    full. Costs the extra prompts' generation and scoring. 0 = off."""

    def sampling_config(self, seed: int | None = None) -> SamplingConfig:
        """The SamplingConfig of one rollout call: `sampling` with n = group_size."""
        return replace(self.sampling, n=self.group_size, seed=self.sampling.seed if seed is None else seed)

    def tolerance_for(self, dtype: str) -> float:
        """`verify_tolerance`, or its default for a model of `dtype`."""
        if self.verify_tolerance is not None:
            return self.verify_tolerance
        return 1e-3 if dtype == "float32" else 0.1

    def validate(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"rollout.group_size must be >= 1, got {self.group_size}")
        if self.group_size > MAX_SAMPLES_PER_PROMPT:
            raise ValueError(f"rollout.group_size must be <= {MAX_SAMPLES_PER_PROMPT}, got {self.group_size}")
        if self.verify_every < 0:
            raise ValueError(f"rollout.verify_every must be >= 0, got {self.verify_every}")
        if self.dynamic_sampling_prompts < 0:
            raise ValueError(f"rollout.dynamic_sampling_prompts must be >= 0, got {self.dynamic_sampling_prompts}")
        if self.verify_tolerance is not None and self.verify_tolerance <= 0:
            raise ValueError(f"rollout.verify_tolerance must be > 0, got {self.verify_tolerance}")
        if self.sampling.n != 1:
            raise ValueError(f"rollout.sampling.n is {self.sampling.n}; set rollout.group_size instead")
        if self.sampling.max_tokens < 1 or self.sampling.temperature < 0 or not 0 < self.sampling.top_p <= 1:
            raise ValueError("rollout.sampling needs max_tokens >= 1, temperature >= 0, 0 < top_p <= 1")
        self._check_reproducible_sampling()
        _checked("rollout.engine", self.engine.validate)

    def _check_reproducible_sampling(self) -> None:
        """Refuse sampling whose distribution the trainer's log-probs cannot reproduce.

        The trainer scores rollout tokens under softmax(z / T) (algorithm/loss.py); the
        policy-gradient ratios, TIS and the engine/trainer mismatch metrics are only right when
        that is the distribution the engine sampled from and the one its log-probs describe.
        """
        temperature, top_p = self.sampling.temperature, self.sampling.top_p
        if temperature == 0:
            raise ValueError(
                "rollout.sampling.temperature is 0 (greedy): training rollouts need sampling, "
                "since the group's samples would all be the same response (no advantage signal) "
                "and an argmax has no log-probs to train on; use a temperature > 0"
            )
        if top_p < 1:
            raise ValueError(
                f"rollout.sampling.top_p is {top_p}: nucleus sampling renormalizes over a "
                "per-token subset of the vocabulary that the trainer's log-probs do not "
                "reproduce, so the policy-gradient ratios would be of another distribution; "
                "use top_p 1 (a lower temperature also sharpens sampling)"
            )
        if temperature != 1 and self.engine.logprobs_mode != "processed_logprobs":
            raise ValueError(
                f"rollout.engine.logprobs_mode is {self.engine.logprobs_mode!r} but "
                f"rollout.sampling.temperature is {temperature}: the engine would return "
                "log-probs at temperature 1 while the trainer's are at the sampled temperature, "
                "so TIS and the log-prob mismatch metrics would compare different distributions; "
                "set rollout.engine.logprobs_mode=processed_logprobs"
            )


@dataclass
class DiscriminatorSection:
    """Which discriminator scores policy responses against expert references."""

    kind: Literal["none", "frozen", "cotrained", "overlap"] = "none"
    """"frozen": a reference-conditioned reward model (the paper); "cotrained": a classifier
    trained alongside the policy; "overlap": word-overlap F1 (model-free, CPU demos); "none"."""
    frozen: FrozenScorerConfig | None = None
    """Settings of kind "frozen" (its `path` is required)."""
    cotrained: CoTrainedDiscriminatorConfig = field(default_factory=CoTrainedDiscriminatorConfig)
    """Settings of kind "cotrained"."""
    overlap: OverlapScorerConfig = field(default_factory=OverlapScorerConfig)
    """Settings of kind "overlap" (case and punctuation awareness)."""
    cotrained_init: str | None = None
    """kind "cotrained": a HF Qwen3 directory whose weights initialize the discriminator's
    backbone (e.g. the policy's starting checkpoint, or a smaller Qwen3); its architecture is
    the discriminator's. The scalar head starts random."""

    def validate(self) -> None:
        if self.kind == "frozen":
            if self.frozen is None:
                raise ValueError("discriminator.frozen.path is required for discriminator.kind=frozen")
            _checked("discriminator.frozen", self.frozen.validate)
        if self.kind == "cotrained":
            if self.cotrained_init is None:
                raise ValueError("discriminator.cotrained_init is required for discriminator.kind=cotrained")
            _checked("discriminator.cotrained", self.cotrained.validate)


@dataclass
class RewardSection:
    """How constraint verdicts become the task reward."""

    mode: RewardMode = RewardMode.STRICT
    """strict (the paper's binary reward), strict_fraction, loose or loose_fraction."""
    num_workers: int = 0
    """Processes of each rank's reward pool (every rank checks its share of the step's rollouts,
    algorithm/sharded_scoring.py); 0 checks in the trainer process (small runs)."""

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"reward.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class DataSection:
    """Where demonstrations and RL prompts come from and how much of each a step takes."""

    demo_file: str | None = None
    """JSONL of demonstrations (data/schemas.py Demonstration); None = no SFT data."""
    rl_prompt_file: str | None = None
    """JSONL of RL prompts with IFEval constraints (and expert references for the discriminator)."""
    prompts_per_step: int = 64
    """RL prompts per optimizer step (global, over all data-parallel ranks); each is sampled
    rollout.group_size times."""
    demos_per_step: int = 64
    """Demonstrations per optimizer step (global); the paper uses 1:1 with RL prompts."""
    max_prompt_tokens: int = 1024
    """Longest templated prompt in tokens; see `overlong`."""
    max_response_tokens: int = 2048
    """Longest demonstration response in tokens; see `overlong`."""
    overlong: Literal["truncate", "skip"] = "skip"
    """Records over a limit: "skip" them, or "truncate" (prompts keep their end, responses their
    start). Either way they are counted and reported."""
    shuffle_seed: int | None = None
    """Seed of the per-epoch shuffle of each data set; None follows `train.seed`, so that a run's
    one seed varies its data order too (a study's seeds then differ in data as well as sampling)."""

    def validate(self) -> None:
        for name in ("prompts_per_step", "demos_per_step", "max_prompt_tokens", "max_response_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class RunConfig:
    """A whole training run."""

    name: str = "run"
    """Short name for logs and wandb."""
    model: ModelSection = field(default_factory=ModelSection)
    """The model and its parallel layout."""
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    """The loss: variant, weights, schedule."""
    rollout: RolloutSection = field(default_factory=RolloutSection)
    """The rollout engine and sampling."""
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    """The adversarial scorer."""
    reward: RewardSection = field(default_factory=RewardSection)
    """The task reward."""
    data: DataSection = field(default_factory=DataSection)
    """Data sets and per-step amounts."""
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    """Optimizer and LR schedule."""
    train: TrainSection = field(default_factory=TrainSection)
    """Run length, seed and batching."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoint schedule and resume."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Held-out evaluation during training (`eval.every`)."""
    logging: LoggingSection = field(default_factory=LoggingSection)
    """Metrics and logs."""
    plan: PlanSection = field(default_factory=PlanSection)
    """The cluster the recipe is sized for (scaling arithmetic only)."""

    @property
    def checkpoint_dir(self) -> str:
        """`checkpoint.dir`, or `<run_dir>/checkpoints` when unset."""
        return self.checkpoint.dir or f"{self.logging.run_dir.rstrip('/')}/checkpoints"

    def lr_plan(self) -> list[StageLR] | None:
        """Each stage's own learning-rate schedule when a stage sets `lr`, else None (one schedule)."""
        o = self.optimizer
        return stage_lr_plan(self.objective_config().stages, o.lr, o.min_lr, o.warmup_steps, self.train.steps)

    @property
    def eval_max_tokens(self) -> int:
        """`eval.max_tokens`, or `rollout.sampling.max_tokens` when that is unset."""
        return self.eval.max_tokens if self.eval.max_tokens is not None else self.rollout.sampling.max_tokens

    @property
    def data_seed(self) -> int:
        """The seed of the data order: `data.shuffle_seed`, or `train.seed` when that is unset."""
        return self.train.seed if self.data.shuffle_seed is None else self.data.shuffle_seed

    def validate(self) -> RunConfig:
        """Check every section and their agreement; raise ConfigError naming the field. Returns self."""
        if self.model.hf_dir is None:
            raise ConfigError("model.hf_dir is not set; the architecture is read from its config.json")
        check_finite(self)
        for name in ("model", "rollout", "discriminator", "reward", "data", "optimizer", "train",
                     "checkpoint", "eval", "logging", "plan"):
            _checked(name, getattr(self, name).validate)
        objective = self.objective_config()
        needs_engine = any(s.uses_rollouts for s in objective.stages)
        if self.eval.every and not needs_engine:
            raise ConfigError(f"eval.every is {self.eval.every} but no stage of objective {objective.variant!r} "
                              f"rolls out, so there is no engine to evaluate with (use tools/eval.py on a checkpoint)")
        if self.eval.every and self.data.max_prompt_tokens + self.eval_max_tokens > self.rollout.engine.max_model_len:
            raise ConfigError(f"data.max_prompt_tokens ({self.data.max_prompt_tokens}) + eval.max_tokens "
                              f"({self.eval_max_tokens}) exceeds rollout.engine.max_model_len "
                              f"({self.rollout.engine.max_model_len})")
        minis = self.train.mini_batches
        if minis > 1:
            rl = any(s.rollout_prompts == "rl" for s in objective.stages)
            demo_kind = any(s.uses_demos or s.rollout_prompts == "demo" for s in objective.stages)
            if rl and minis > self.data.prompts_per_step:
                raise ConfigError(f"train.mini_batches ({minis}) exceeds data.prompts_per_step "
                                  f"({self.data.prompts_per_step}): every mini-batch needs a rollout group")
            if demo_kind and minis > self.data.demos_per_step:
                raise ConfigError(f"train.mini_batches ({minis}) exceeds data.demos_per_step "
                                  f"({self.data.demos_per_step}): every mini-batch needs a demonstration")
        for i, stage_lr in enumerate(self.lr_plan() or []):
            if stage_lr.min_lr > stage_lr.lr:
                raise ConfigError(f"objective.stages[{i}].min_lr ({stage_lr.min_lr}) exceeds the stage's learning "
                                  f"rate ({stage_lr.lr}, optimizer.lr when the stage sets none)")
        try:
            objective.check_requirements(
                has_rollout_engine=True, has_references=True, has_demonstrations=self.data.demo_file is not None
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if any(s.rollout_prompts == "rl" for s in objective.stages) and self.data.rl_prompt_file is None:
            raise ConfigError(f"objective {objective.variant!r} rolls out RL prompts but data.rl_prompt_file is not set")
        if any(s.uses_discriminator for s in objective.stages) and self.discriminator.kind == "none":
            raise ConfigError(
                f"objective {objective.variant!r} uses the discriminator (lambda_adv or lambda_shape > 0) "
                f"but discriminator.kind is 'none'; choose frozen, cotrained or overlap"
            )
        if self.model.context_parallel > 1:
            raise ConfigError(
                f"model.context_parallel={self.model.context_parallel}: context parallelism needs every packed "
                f"sample padded to a multiple of 2 x context_parallel, which the trainer's packing does not do; "
                f"use tensor or pipeline parallelism"
            )
        multiple = self.model.token_multiple
        if self.train.micro_batch_tokens % multiple:
            raise ConfigError(
                f"train.micro_batch_tokens ({self.train.micro_batch_tokens}) must be a multiple of {multiple}, the "
                f"sequence-length multiple of model.tensor_parallel={self.model.tensor_parallel} with "
                f"model.sequence_parallel={self.model.sequence_parallel} and model.fp8={self.model.fp8}"
            )
        engine_tp = self.rollout.engine.tensor_parallel_size
        if needs_engine and self.plan.gpus_per_node % engine_tp:
            raise ConfigError(
                f"rollout.engine.tensor_parallel_size={engine_tp} does not divide plan.gpus_per_node="
                f"{self.plan.gpus_per_node}: an engine would span nodes (see docs/colocation.md)"
            )
        if needs_engine:
            longest = self.data.max_prompt_tokens + self.rollout.sampling.max_tokens
            if longest > self.rollout.engine.max_model_len:
                raise ConfigError(
                    f"data.max_prompt_tokens ({self.data.max_prompt_tokens}) + rollout.sampling.max_tokens "
                    f"({self.rollout.sampling.max_tokens}) = {longest} exceeds rollout.engine.max_model_len "
                    f"({self.rollout.engine.max_model_len})"
                )
        longest_sample = self.data.max_prompt_tokens + max(self.data.max_response_tokens, self.rollout.sampling.max_tokens)
        if longest_sample > self.train.micro_batch_tokens:
            raise ConfigError(
                f"train.micro_batch_tokens ({self.train.micro_batch_tokens}) cannot hold the longest sample "
                f"(data.max_prompt_tokens + max(data.max_response_tokens, rollout.sampling.max_tokens) = {longest_sample})"
            )
        total = sum(s.steps or 0 for s in objective.stages[:-1])
        if total >= self.train.steps:
            raise ConfigError(
                f"the stages before the last take {total} steps but train.steps is {self.train.steps}; "
                f"the last stage would never run"
            )
        return self

    def objective_config(self) -> ObjectiveConfig:
        """The objective built from the `objective` section (validated)."""
        try:
            return self.objective.build()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def check_world(self, world_size: int) -> int:
        """The data-parallel size for `world_size` ranks; ConfigError when the layout does not
        divide the world, or (when `model.hf_dir` holds a config.json) the model's heads/layers."""
        mp = self.model.model_parallel_size
        if world_size % mp:
            raise ConfigError(
                f"{world_size} ranks are not divisible by model.tensor_parallel x pipeline_parallel x "
                f"context_parallel = {mp}"
            )
        dp = world_size // mp
        vllm_tp = self.rollout.engine.tensor_parallel_size
        if world_size % vllm_tp:
            raise ConfigError(
                f"{world_size} ranks are not divisible by rollout.engine.tensor_parallel_size={vllm_tp}: every rank "
                f"runs one shard of one engine (docs/colocation.md)"
            )
        hf_config = read_model_config(self.model.hf_dir)
        if hf_config is not None:
            check_model_layout(self, hf_config, f"{self.model.hf_dir}/config.json")
        return dp

    def check_arch(self, num_attention_heads: int, num_key_value_heads: int, num_layers: int) -> None:
        """ConfigError when the model's shape does not fit the layout (`check_model_layout`)."""
        check_model_layout(self, {"num_attention_heads": num_attention_heads, "num_key_value_heads": num_key_value_heads,
                                  "num_hidden_layers": num_layers}, "the model's config.json")


def read_model_config(hf_dir: str | None) -> dict | None:
    """`<hf_dir>/config.json` as plain data, or None when there is none (yet)."""
    if not hf_dir:
        return None
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not readable JSON ({err})") from None
    return data if isinstance(data, dict) else None


def check_model_layout(config: RunConfig, hf_config: dict, where: str) -> None:
    """ConfigError when the parallel layout cannot split this model. Megatron splits attention
    heads, key/value heads and the MLP width over tensor parallelism, and layers over pipeline
    stages (times virtual stages). When a stage rolls out, vLLM splits query heads over its own
    TP and needs the key/value heads a multiple or a divisor of it (it replicates KV heads when
    it has more ranks than heads)."""
    m = config.model
    keys = {"attention heads": "num_attention_heads", "key/value heads": "num_key_value_heads",
            "MLP width": "intermediate_size", "layers": "num_hidden_layers"}
    sizes = {name: hf_config[key] for name, key in keys.items() if key in hf_config}
    if not all(isinstance(v, int) and v > 0 for v in sizes.values()) or len(sizes) < 3:
        return  # not a config this check understands; the model loader reports it
    for what in ("attention heads", "key/value heads", "MLP width"):
        if what in sizes and sizes[what] % m.tensor_parallel:
            raise ConfigError(f"model.tensor_parallel={m.tensor_parallel} does not divide the model's "
                              f"{sizes[what]} {what} ({where})")
    stages = m.pipeline_parallel * (m.virtual_pipeline_stages or 1)
    if sizes["layers"] % stages:
        raise ConfigError(f"model.pipeline_parallel x virtual_pipeline_stages = {stages} does not divide the "
                          f"model's {sizes['layers']} layers ({where})")
    if not any(s.uses_rollouts for s in config.objective_config().stages):
        return
    e, heads, kv = config.rollout.engine.tensor_parallel_size, sizes["attention heads"], sizes["key/value heads"]
    if heads % e or (kv % e and e % kv):
        raise ConfigError(f"rollout.engine.tensor_parallel_size={e} does not fit the model's {heads} attention "
                          f"and {kv} KV heads: vLLM needs the heads divisible by it, and the KV heads a multiple "
                          f"or a divisor of it ({where})")


def check_finite(obj, path: str = "") -> None:
    """ConfigError naming the first float field that is NaN or infinite (no comparison catches
    NaN: `lr <= 0` is False for it, so every range check would let it through)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            check_finite(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_finite(item, f"{path}.{i}")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            check_finite(item, f"{path}.{key}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{path}: must be a finite number, got {obj}")


VARIANT_CHOICES = (*VARIANTS, "custom")
"""Every accepted value of objective.variant."""
