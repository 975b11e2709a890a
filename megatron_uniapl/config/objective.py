"""Typed configuration of the UniAPL objective; every variant of the paper is a named preset.

One objective covers all variants (docs/method.md):

    L = mu_t * L_sft + (1 - mu_t) * L_pg(A_task) + lambda_adv * L_pg(A_adv) + beta * KL

A recipe is a list of `Stage`s, each with its own weights and length; a single-stage variant is a
list of one. `objective_for_variant(name)` builds the paper's variants; `ObjectiveConfig.validate`
checks the numbers, and `check_requirements` checks the run can supply what the objective needs
(a rollout engine, expert references for the discriminator).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from megatron_uniapl.config.schedule import MuSchedule

KL_ESTIMATORS = ("k1", "k2", "k3")
"""Estimators of KL(pi || pi_ref) per token (see `losses.pg.kl_per_token`)."""

ROLLOUT_PROMPTS = ("none", "rl", "demo")

SHAPE_NORMS = ("joint", "per_term")
"""How the reward-shaping ablation normalizes r and d (see `Stage.shape_norm`)."""


@dataclass
class PolicyGradientConfig:
    """The GRPO surrogate and advantage normalization, shared by the task and adversarial terms."""

    clip_low: float = 0.2
    """rho is clipped below at 1 - clip_low."""
    clip_high: float = 0.2
    """rho is clipped above at 1 + clip_high (a larger value, "clip-higher", keeps exploration)."""
    std_normalize: bool = True
    """Divide group-centered signals by the group std (GRPO); False is Dr.GRPO's mean-only."""
    adv_eps: float = 1e-6
    """Added to the group std before dividing; keeps constant groups at advantage 0."""
    std_ddof: int = 0
    """0: population std (default, see losses/advantages.py for why); 1: sample std."""
    tis_cap: float | None = None
    """Truncation of the importance weight pi_old / pi_rollout; None turns TIS off. 2.0 is a
    common choice when the engine's log-probs differ visibly from the trainer's."""
    kl_estimator: str = "k3"
    """Estimator of KL(pi || pi_ref) for the beta term: "k1", "k2" or "k3" (low variance)."""

    def validate(self, where: str = "objective.pg") -> None:
        """Raise ValueError naming the offending field."""
        for name in ("clip_low", "clip_high", "adv_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_low >= 1:
            raise ValueError(
                f"{where}.clip_low must be < 1 (rho is clipped at 1 - clip_low), got {self.clip_low}"
            )
        if self.std_ddof not in (0, 1):
            raise ValueError(f"{where}.std_ddof must be 0 or 1, got {self.std_ddof}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"{where}.tis_cap must be > 0 or None, got {self.tis_cap}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"{where}.kl_estimator is {self.kl_estimator!r}; choose one of {KL_ESTIMATORS}")


@dataclass
class Stage:
    """One stage of a recipe: weights held (or scheduled) for `steps` optimizer steps."""

    name: str
    """Label for logs and checkpoints, e.g. "sft" or "a-grpo"."""
    steps: int | None = None
    """Length in optimizer steps; None (only for the last stage) = until the run ends."""
    mu: MuSchedule = field(default_factory=MuSchedule)
    """The SFT weight mu_t; the task policy-gradient term gets 1 - mu_t."""
    lambda_adv: float = 0.0
    """Weight of the adversarial policy-gradient term (discriminator advantages); 0 = off."""
    beta: float = 0.0
    """Weight of the KL penalty to the reference policy; 0 = off (no reference forward)."""
    lambda_shape: float = 0.0
    """Reward-shaping ablation: the discriminator score d is folded into the task signal with
    this weight (how: `shape_norm`); 0 = off."""
    shape_norm: str = "joint"
    """How the shaping ablation combines r and d. "joint": A_task = groupnorm(r + lambda_shape * d),
    the paper's ablation (the score is added to the reward, then GRPO normalizes as usual). Its
    lambda only sets d's share relative to r within a group: where a group's rewards are all
    equal, A_task = groupnorm(d) at full strength whatever lambda is. "per_term":
    A_task = groupnorm(r) + lambda_shape * groupnorm(d), which keeps lambda a fixed weight of d
    in every group (a control that tells the effect of lambda from that of the normalization)."""
    rollout_prompts: str = "rl"
    """Which prompts the engine samples: "none", "rl" (RL prompts) or "demo" (A-SFT)."""
    lr: float | None = None
    """Peak learning rate of this stage; None: `optimizer.lr`. When any stage sets `lr`, every
    stage runs a learning-rate schedule of its own (warm-up, then decay over the stage's steps);
    otherwise one schedule spans the run (config/lr_plan.py)."""
    min_lr: float | None = None
    """Learning rate at the end of this stage's own schedule; None: `optimizer.min_lr` (capped at
    the stage's `lr`). Only with per-stage schedules."""
    warmup_steps: int | None = None
    """Warm-up steps of this stage's own schedule; None: `optimizer.warmup_steps`."""
    reset_optimizer: bool = False
    """Zero the optimizer's moments (Adam's first and second moments and step count) when this
    stage begins, as if it were a run of its own: SFT-sized Adam statistics carried into an RL
    stage skew its first updates. Ignored on the first stage (there is nothing to reset)."""
    refresh_reference: bool = False
    """Make the KL reference the policy as this stage begins (the result of the stages before,
    e.g. the SFT model of SFT -> GRPO) instead of the initial model. Needs beta > 0. The
    refreshed reference is saved once beside the checkpoints, so a resumed run keeps it."""

    @property
    def uses_rollouts(self) -> bool:
        """Whether this stage samples from the policy at all."""
        return self.rollout_prompts != "none"

    @property
    def uses_discriminator(self) -> bool:
        """Whether this stage needs discriminator scores (separate term or shaping)."""
        return self.lambda_adv > 0 or self.lambda_shape > 0

    @property
    def uses_demos(self) -> bool:
        """Whether this stage trains on demonstrations (mu can be > 0)."""
        return self.mu.bounds()[1] > 0

    def validate(self, where: str) -> None:
        """Raise ValueError naming the offending field (`where` is this stage's path)."""
        self.mu.validate(f"{where}.mu")
        for name in ("lambda_adv", "beta", "lambda_shape"):
            v = getattr(self, name)
            if v < 0:
                raise ValueError(f"{where}.{name} must be >= 0 (it is a loss weight), got {v}")
        if self.shape_norm not in SHAPE_NORMS:
            raise ValueError(f"{where}.shape_norm is {self.shape_norm!r}; choose one of {SHAPE_NORMS}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"{where}.steps must be > 0 or None, got {self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"{where}.lr must be > 0, got {self.lr}")
        if self.min_lr is not None and (self.min_lr < 0 or (self.lr is not None and self.min_lr > self.lr)):
            raise ValueError(f"{where}.min_lr must be in [0, lr], got {self.min_lr} (lr {self.lr})")
        if self.refresh_reference and self.beta <= 0:
            raise ValueError(f"{where}.refresh_reference needs beta > 0: without a KL term there is no reference")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"{where}.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.rollout_prompts not in ROLLOUT_PROMPTS:
            raise ValueError(
                f"{where}.rollout_prompts is {self.rollout_prompts!r}; choose one of {ROLLOUT_PROMPTS}"
            )
        mu_lo, _ = self.mu.bounds()
        needs_rollouts = mu_lo < 1 or self.lambda_adv > 0 or self.beta > 0
        if needs_rollouts and not self.uses_rollouts:
            raise ValueError(
                f"{where} has policy-gradient or KL weight (mu can be {mu_lo}, lambda_adv="
                f"{self.lambda_adv}, beta={self.beta}) but rollout_prompts='none'"
            )
        if self.lambda_shape > 0 and mu_lo >= 1:
            raise ValueError(f"{where}.lambda_shape shapes the task reward, but mu is 1 (no task term)")
        if self.lambda_shape > 0 and self.lambda_adv > 0:
            raise ValueError(
                f"{where} sets both lambda_adv and lambda_shape: the shaping ablation replaces the "
                f"separate adversarial term, use one of them"
            )


@dataclass
class StepWeights:
    """The objective's weights at one optimizer step (what the loss function consumes)."""

    mu: float
    """SFT weight; the task policy-gradient term gets 1 - mu."""
    lambda_adv: float
    """Adversarial policy-gradient weight."""
    beta: float
    """KL weight."""
    lambda_shape: float
    """Reward-shaping coefficient (used when computing advantages, not as a loss weight)."""
    stage: str
    """Name of the stage this step belongs to."""
    shape_norm: str = "joint"
    """How shaping combines r and d: "joint" or "per_term" (see `Stage.shape_norm`)."""

    def term_weights(self) -> dict[str, float]:
        """Loss weight per term name, as `combine_terms` expects."""
        return {"sft": self.mu, "pg_task": 1.0 - self.mu, "pg_adv": self.lambda_adv, "kl": self.beta}


@dataclass
class ObjectiveConfig:
    """The whole objective: a named variant, its stages and the policy-gradient settings."""

    variant: str = "uniapl"
    """Name of the paper variant these stages implement (for logs; see VARIANTS)."""
    stages: list[Stage] = field(default_factory=list)
    """The recipe, in order; at least one."""
    pg: PolicyGradientConfig = field(default_factory=PolicyGradientConfig)
    """Surrogate, advantage and KL-estimator settings."""

    def validate(self) -> ObjectiveConfig:
        """Check every field; raise ValueError naming the first bad one. Returns self."""
        if not self.stages:
            raise ValueError("objective.stages is empty; a recipe needs at least one stage")
        for i, stage in enumerate(self.stages):
            stage.validate(f"objective.stages[{i}]")
            if stage.steps is None and i != len(self.stages) - 1:
                raise ValueError(f"objective.stages[{i}].steps is None but it is not the last stage")
        self.pg.validate()
        return self

    def stage_at(self, step: int) -> tuple[Stage, int]:
        """The stage that owns global optimizer `step`, and the step counted within it."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        starts = stage_starts(self.stages)
        index = max(i for i, start in enumerate(starts) if start <= step)
        # Past the planned end the last stage keeps going: its weights hold.
        return self.stages[index], step - starts[index]

    def refreshes_before(self, step: int) -> list[int]:
        """Global steps, before `step`, at which a stage began that refreshes the reference."""
        return [start for stage, start in zip(self.stages, stage_starts(self.stages))
                if stage.refresh_reference and 0 < start < step]

    def weights_at(self, step: int) -> StepWeights:
        """The weights of the objective at global optimizer `step`."""
        stage, local = self.stage_at(step)
        return StepWeights(stage.mu.at(local), stage.lambda_adv, stage.beta, stage.lambda_shape, stage.name,
                           stage.shape_norm)

    def check_requirements(
        self, has_rollout_engine: bool, has_references: bool, has_demonstrations: bool = True
    ) -> None:
        """Raise ValueError if the run cannot feed this objective.

        has_rollout_engine: a rollout engine is configured.
        has_references:     the prompts that are rolled out carry an expert reference response
                            (the discriminator scores a response against it).
        has_demonstrations: a demonstration data set is configured (SFT term, A-SFT prompts).
        """
        for i, stage in enumerate(self.stages):
            where = f"objective.stages[{i}] ({stage.name!r} of variant {self.variant!r})"
            if (stage.uses_demos or stage.rollout_prompts == "demo") and not has_demonstrations:
                raise ValueError(f"{where} trains on demonstrations but no demonstration data is configured")
            if stage.uses_rollouts and not has_rollout_engine:
                raise ValueError(
                    f"{where} samples rollouts on {stage.rollout_prompts} prompts but no rollout "
                    f"engine is configured"
                )
            if stage.uses_discriminator and not has_references:
                raise ValueError(
                    f"{where} uses the discriminator (lambda_adv={stage.lambda_adv}, lambda_shape="
                    f"{stage.lambda_shape}) but the rolled-out prompts have no expert reference responses"
                )


def stage_starts(stages: list[Stage]) -> list[int]:
    """The global step at which each stage begins (the first at 0). Only the last stage may be
    open-ended (`steps` None), so every start is known."""
    starts, start = [], 0
    for stage in stages:
        starts.append(start)
        start += stage.steps or 0
    return starts


def unknown_name_error(kind: str, name: str, known: list[str]) -> ValueError:
    """A ValueError for an unknown `name`, suggesting the closest known one."""
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})")
