"""Group-normalized advantages (GRPO): each response is judged against its siblings.

For the G responses to one prompt with scalar signals r_1..r_G:

    A_i = (r_i - mean_G(r)) / (std_G(r) + eps)      (std_normalize=True, the GRPO default)
    A_i =  r_i - mean_G(r)                          (std_normalize=False, Dr.GRPO-style)

Which standard deviation: the POPULATION std (divide by G, ddof 0) by default. With it the
normalized advantages of every non-constant group have mean 0 and mean square exactly
1 - O(eps), whatever G is, so the step size does not drift when the group size changes; the
sample std (ddof 1) would shrink them by sqrt((G-1)/G) and is undefined for G = 1. `ddof=1` is
available for matching other implementations.

A group whose signals are all equal (all responses correct, or all wrong) gets A = 0 exactly,
also with eps = 0. A group of one sample also gets 0.

The same function serves every signal: the task reward (A_task), the discriminator score (A_adv),
and the reward-shaping ablation (`shaped_advantages`), which combines r and d one of two ways:

    joint:     A = groupnorm(r + lambda * d)              (the paper's ablation)
    per_term:  A = groupnorm(r) + lambda * groupnorm(d)

They differ because normalization divides by the group's spread: in "joint", a group whose
rewards are all equal has r + lambda*d spread only by lambda*d, so A = groupnorm(d) and lambda
cancels; lambda only matters in groups where r varies too. "per_term" keeps lambda the weight of
d in every group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def group_normalize(
    values: torch.Tensor | Sequence[float],
    group_ids: torch.Tensor | Sequence[int],
    std_normalize: bool = True,
    eps: float = 1e-6,
    ddof: int = 0,
) -> torch.Tensor:
    """Normalize `values` within the groups given by `group_ids`.

    values:    [N] scalar signal per sample (float).
    group_ids: [N] integer group of each sample; groups need not be contiguous or sorted.
    Returns [N] float64 advantages (float64 so that the small differences of binary rewards in
    big groups are exact before they are cast into the training dtype). No reduction.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    g = torch.as_tensor(group_ids, dtype=torch.long).flatten()
    if v.shape != g.shape:
        raise ValueError(f"{v.numel()} values but {g.numel()} group ids")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population std) or 1 (sample std), got {ddof}")
    if not torch.isfinite(v).all():
        bad = torch.nonzero(~torch.isfinite(v)).flatten().tolist()
        raise ValueError(f"non-finite signal values at sample indices {bad[:10]}")
    _, inverse, sizes = torch.unique(g, return_inverse=True, return_counts=True)
    sizes = sizes.to(torch.float64)
    sums = torch.zeros_like(sizes).index_add_(0, inverse, v)
    means = sums / sizes
    # A group of equal values is centered to exactly 0 (sum/size can miss the value by an ulp),
    # so it gets A = 0 even with eps = 0, where 0/0 would otherwise be NaN.
    lo = torch.full_like(sizes, float("inf")).scatter_reduce_(0, inverse, v, "amin")
    hi = torch.full_like(sizes, float("-inf")).scatter_reduce_(0, inverse, v, "amax")
    constant = (lo == hi)[inverse]
    centered = torch.where(constant, torch.zeros_like(v), v - means[inverse])
    if not std_normalize:
        return centered
    sq = torch.zeros_like(sizes).index_add_(0, inverse, centered * centered)
    dof = (sizes - ddof).clamp(min=1.0)
    std = torch.sqrt(sq / dof)
    return torch.where(constant, centered, centered / (std[inverse] + eps))


def shaped_signal(
    rewards: torch.Tensor | Sequence[float],
    disc_scores: torch.Tensor | Sequence[float],
    lambda_shape: float,
) -> torch.Tensor:
    """The reward-shaping ablation's signal `r + lambda_shape * d` ([N] each, returns [N] float64).

    The paper found this worse than a separate adversarial term; it is kept as a variant.
    Group-normalized, this is the "joint" shaping of `shaped_advantages`.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    d = torch.as_tensor(disc_scores, dtype=torch.float64).flatten()
    if r.shape != d.shape:
        raise ValueError(f"{r.numel()} rewards but {d.numel()} discriminator scores")
    return r + lambda_shape * d


def shaped_advantages(
    rewards: torch.Tensor | Sequence[float],
    disc_scores: torch.Tensor | Sequence[float],
    group_ids: torch.Tensor | Sequence[int],
    lambda_shape: float,
    mode: str = "joint",
    std_normalize: bool = True,
    eps: float = 1e-6,
    ddof: int = 0,
) -> torch.Tensor:
    """The shaping ablation's task advantages ([N] float64): "joint" or "per_term" (module doc)."""
    norm = dict(std_normalize=std_normalize, eps=eps, ddof=ddof)
    if mode == "joint":
        return group_normalize(shaped_signal(rewards, disc_scores, lambda_shape), group_ids, **norm)
    if mode == "per_term":
        # each normalization checks its values against group_ids, so the lengths agree
        r = group_normalize(rewards, group_ids, **norm)
        return r + lambda_shape * group_normalize(disc_scores, group_ids, **norm)
    raise ValueError(f"shaping mode must be 'joint' or 'per_term', got {mode!r}")


def distinct_by_group(values: Sequence[float], group_ids: Sequence[int]) -> dict[int, set[float]]:
    """Group id -> the distinct values of its members, groups in order of first appearance. A
    group with one distinct value has zero advantage (see the module docstring)."""
    if len(values) != len(group_ids):
        raise ValueError(f"{len(values)} values but {len(group_ids)} group ids")
    groups: dict[int, set[float]] = {}
    for v, g in zip(values, group_ids):
        groups.setdefault(g, set()).add(float(v))
    return groups
