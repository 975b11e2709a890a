"""The paper's variants as named presets of the one objective (the table in docs/method.md).

    variant          mu                 lambda_adv  rollouts on   stages
    sft              1                  0           none          1
    a-sft            1                  > 0         demo prompts  1
    grpo             0                  0           RL prompts    1
    a-grpo           0                  > 0         RL prompts    1
    chord            CHORD schedule     0           RL prompts    1
    a-chord          CHORD schedule     > 0         RL prompts    1
    uniapl           fixed (0.5)        > 0         RL prompts    1   (A-CHORD with constant mu)
    sft->grpo        1, then 0          0, then 0                 2
    sft->a-grpo      1, then 0          0, then > 0               2
    a-sft->a-grpo    1, then 0          > 0, > 0                  2
    reward-shaping   fixed (0.5)        0 (shaping lambda_shape > 0)  1

Staged variants take `first_stage_steps` for their first stage; the last stage runs to the end.
With `first_stage_lr` the first stage runs at its own learning rate and each stage has a schedule of
its own (config/lr_plan.py); `reset_optimizer` starts the second stage with fresh optimizer moments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from megatron_uniapl.config.objective import (
    ObjectiveConfig,
    PolicyGradientConfig,
    Stage,
    unknown_name_error,
)
from megatron_uniapl.config.schedule import MuSchedule


def _const(mu: float) -> MuSchedule:
    return MuSchedule(kind="constant", value=mu)


def _sft(p) -> Stage:
    return Stage("sft", mu=_const(1.0), rollout_prompts="none")


def _a_sft(p) -> Stage:
    return Stage("a-sft", mu=_const(1.0), lambda_adv=p["lambda_adv"], rollout_prompts="demo")


def _grpo(p) -> Stage:
    return Stage("grpo", mu=_const(0.0), beta=p["beta"])


def _a_grpo(p) -> Stage:
    return Stage("a-grpo", mu=_const(0.0), lambda_adv=p["lambda_adv"], beta=p["beta"])


def _staged(first: Callable, second: Callable) -> Callable:
    def build(p) -> list[Stage]:
        return [replace(first(p), steps=p["first_stage_steps"], lr=p["first_stage_lr"]),
                replace(second(p), reset_optimizer=p["reset_optimizer"], refresh_reference=p["refresh_reference"])]

    return build


_BUILDERS: dict[str, Callable[[dict], list[Stage]]] = {
    "sft": lambda p: [_sft(p)],
    "a-sft": lambda p: [_a_sft(p)],
    "grpo": lambda p: [_grpo(p)],
    "a-grpo": lambda p: [_a_grpo(p)],
    "chord": lambda p: [Stage("chord", mu=p["chord"], beta=p["beta"])],
    "a-chord": lambda p: [Stage("a-chord", mu=p["chord"], lambda_adv=p["lambda_adv"], beta=p["beta"])],
    "uniapl": lambda p: [Stage("uniapl", mu=_const(p["mu"]), lambda_adv=p["lambda_adv"], beta=p["beta"])],
    "sft->grpo": _staged(_sft, _grpo),
    "sft->a-grpo": _staged(_sft, _a_grpo),
    "a-sft->a-grpo": _staged(_a_sft, _a_grpo),
    "reward-shaping": lambda p: [
        Stage("reward-shaping", mu=_const(p["mu"]), lambda_shape=p["lambda_shape"], beta=p["beta"],
              shape_norm=p["shape_norm"])
    ],
}

VARIANTS: tuple[str, ...] = tuple(_BUILDERS)
"""Every selectable variant name."""


def objective_for_variant(
    name: str,
    *,
    mu: float = 0.5,
    lambda_adv: float = 0.1,
    beta: float = 0.0,
    lambda_shape: float = 0.1,
    shape_norm: str = "joint",
    first_stage_steps: int = 100,
    first_stage_lr: float | None = None,
    reset_optimizer: bool = False,
    refresh_reference: bool = False,
    chord: MuSchedule | None = None,
    pg: PolicyGradientConfig | None = None,
) -> ObjectiveConfig:
    """The validated `ObjectiveConfig` of paper variant `name` (case-insensitive; see VARIANTS).

    mu:                fixed SFT weight of "uniapl" and "reward-shaping".
    lambda_adv:        adversarial weight of the A- variants.
    beta:              KL weight of every stage that rolls out (default 0, no KL).
    lambda_shape:      shaping coefficient of "reward-shaping".
    shape_norm:        "joint" or "per_term" normalization of "reward-shaping" (`Stage.shape_norm`).
    first_stage_steps: length of the first stage of staged variants.
    first_stage_lr:    peak learning rate of that first stage (None: the optimizer's, one schedule).
    reset_optimizer:   staged variants: zero the optimizer's moments when the second stage begins.
    refresh_reference: staged variants: the second stage's KL reference is the first stage's result.
    chord:             the mu schedule of "chord" / "a-chord" (default `MuSchedule(kind="chord")`).
    pg:                policy-gradient settings (default `PolicyGradientConfig()`).
    Unknown names raise ValueError suggesting the closest known name.
    """
    key = name.strip().lower().replace("→", "->").replace(" ", "")
    if key not in _BUILDERS:
        raise unknown_name_error("UniAPL variant", name, list(VARIANTS))
    params = dict(
        mu=mu,
        lambda_adv=lambda_adv,
        beta=beta,
        lambda_shape=lambda_shape,
        shape_norm=shape_norm,
        first_stage_steps=first_stage_steps,
        first_stage_lr=first_stage_lr,
        reset_optimizer=reset_optimizer,
        refresh_reference=refresh_reference,
        chord=chord if chord is not None else MuSchedule(kind="chord"),
    )
    config = ObjectiveConfig(variant=key, stages=_BUILDERS[key](params), pg=pg or PolicyGradientConfig())
    return config.validate()
