"""How a prompt's per-constraint verdicts become one reward.
"""

from __future__ import annotations

import enum


class RewardMode(str, enum.Enum):
    """How a prompt's per-constraint verdicts become one reward."""

    STRICT = "strict"
    """1.0 iff all constraints hold on the response as written."""
    STRICT_FRACTION = "strict_fraction"
    """Fraction of constraints that hold on the response as written."""
    LOOSE = "loose"
    """1.0 iff all constraints hold, each on some loose variant of the response."""
    LOOSE_FRACTION = "loose_fraction"
    """Fraction of constraints that hold on some loose variant."""

    @property
    def loose(self) -> bool:
        return self in (RewardMode.LOOSE, RewardMode.LOOSE_FRACTION)

    @property
    def fraction(self) -> bool:
        return self in (RewardMode.STRICT_FRACTION, RewardMode.LOOSE_FRACTION)
