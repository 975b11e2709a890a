"""The SFT weight `mu_t`: constant, or CHORD-style (warm up, then decay).

CHORD mixes `(1 - mu) * L_GRPO + mu * L_SFT` with mu large early (imitate the expert while the
policy is far from it) and small late (let RL take over). This project's schedule, with t the
optimizer step counted from the start of the stage, W = warmup_steps, D = decay_steps:

    t <  W          mu = start + (peak - start) * t / W                       (linear warm-up)
    W <= t < W + D  mu = end + (peak - end) * c((t - W) / D)                  (decay)
    t >= W + D      mu = end
    c(u) = (1 + cos(pi * u)) / 2   for decay="cosine",   c(u) = 1 - u   for decay="linear"

The paper does not publish its exact curve; this is a documented default, not a reproduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("constant", "chord")
DECAY_SHAPES = ("cosine", "linear")


@dataclass
class MuSchedule:
    """How the SFT weight mu (and with it the GRPO weight 1 - mu) moves over a stage."""

    kind: str = "constant"
    """"constant" (mu = `value` throughout) or "chord" (warm-up then decay, formula above)."""
    value: float = 0.5
    """mu for kind="constant"; in [0, 1]."""
    start: float = 0.0
    """chord: mu at step 0, where the warm-up begins; in [0, 1]."""
    peak: float = 0.9
    """chord: mu at the end of the warm-up; in [0, 1]."""
    end: float = 0.05
    """chord: mu after the decay; in [0, 1]."""
    warmup_steps: int = 0
    """chord: steps of linear warm-up from `start` to `peak` (0 = begin at `peak`)."""
    decay_steps: int = 200
    """chord: steps of decay from `peak` to `end`; must be > 0."""
    decay: str = "cosine"
    """chord: shape of the decay, "cosine" or "linear"."""

    def at(self, step: int) -> float:
        """mu at optimizer step `step` (>= 0) of the stage."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind == "constant":
            return float(self.value)
        if step < self.warmup_steps:
            return self.start + (self.peak - self.start) * step / self.warmup_steps
        u = (step - self.warmup_steps) / self.decay_steps
        if u >= 1.0:
            return float(self.end)
        c = 0.5 * (1.0 + math.cos(math.pi * u)) if self.decay == "cosine" else 1.0 - u
        return self.end + (self.peak - self.end) * c

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest mu the schedule can take."""
        if self.kind == "constant":
            return float(self.value), float(self.value)
        points = [self.peak, self.end] + ([self.start] if self.warmup_steps > 0 else [])
        return min(points), max(points)

    def validate(self, where: str) -> None:
        """Raise ValueError naming `where` (the field path) for an invalid schedule."""
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"{where}.kind is {self.kind!r}; choose one of {SCHEDULE_KINDS}")
        names = ("value",) if self.kind == "constant" else ("start", "peak", "end")
        for name in names:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}.{name} must be in [0, 1] (it weighs SFT against GRPO), got {v}")
        if self.kind == "chord":
            if self.warmup_steps < 0:
                raise ValueError(f"{where}.warmup_steps must be >= 0, got {self.warmup_steps}")
            if self.decay_steps <= 0:
                raise ValueError(f"{where}.decay_steps must be > 0, got {self.decay_steps}")
            if self.decay not in DECAY_SHAPES:
                raise ValueError(f"{where}.decay is {self.decay!r}; choose one of {DECAY_SHAPES}")
