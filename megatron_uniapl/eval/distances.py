"""Distances between two empirical distributions, in plain numpy.

The paper's analysis claims UniAPL's outputs are closer to the expert's in response length and
log-probability than GRPO's; these two numbers make "closer" measurable:
- Wasserstein-1 (earth mover's distance), in the unit of the values (tokens, nats): how far
  mass must move; sensitive to shifts of the whole distribution.
- Kolmogorov-Smirnov statistic, unitless in [0, 1]: the largest gap between the two CDFs.
Both take 1-D samples of any sizes, each value weighted equally within its sample.
"""

from __future__ import annotations

import numpy as np


def _samples(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite values")
    return np.sort(array)


def _cdfs_on_grid(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooled sorted support `x` [n] and both right-continuous CDFs evaluated at it [n]."""
    grid = np.unique(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return grid, cdf_a, cdf_b


def wasserstein_1(a, b) -> float:
    """W1(a, b) = integral over x of |F_a(x) - F_b(x)|, F the empirical CDFs.

    a: [n] samples, b: [m] samples. Between consecutive support points the CDFs are constant,
    so the integral is the sum of |F_a - F_b| at each point times the gap to the next point.
    """
    grid, cdf_a, cdf_b = _cdfs_on_grid(_samples(a, "a"), _samples(b, "b"))
    return float(np.sum(np.abs(cdf_a - cdf_b)[:-1] * np.diff(grid)))


def ks_statistic(a, b) -> float:
    """KS(a, b) = max over x of |F_a(x) - F_b(x)|; the supremum is attained at a sample point.

    a: [n] samples, b: [m] samples.
    """
    _, cdf_a, cdf_b = _cdfs_on_grid(_samples(a, "a"), _samples(b, "b"))
    return float(np.max(np.abs(cdf_a - cdf_b)))


def summary(values) -> dict[str, float]:
    """count, mean, std (population), min, median, max of a 1-D sample."""
    array = _samples(values, "values")
    return {"count": int(array.size), "mean": float(array.mean()), "std": float(array.std()),
            "min": float(array[0]), "median": float(np.median(array)), "max": float(array[-1])}
