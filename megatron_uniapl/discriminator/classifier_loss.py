"""The co-trained discriminator's objective, its score for the policy, and its accuracy.

The discriminator D outputs one logit z per sequence; sigmoid(z) is its probability that the
response came from the expert. It is trained as a binary classifier, expert = 1, policy = 0:

    L_D = 1/2 * mean_expert BCE(z, 1 - s) + 1/2 * mean_policy BCE(z, 0) [+ gamma/2 * R1]

Each class is averaged separately, then the two halves are averaged, so the balance does not
depend on how many responses of each kind the step happens to hold. `s` is ONE-SIDED label
smoothing (only the expert target is softened): it stops D from becoming over-confident on expert
data, which would otherwise flatten the gradient the policy learns from, while leaving no reward
for the policy's own samples at the target. R1 is the gradient penalty on expert inputs,
E ||d z / d x||^2 over the input embeddings x, which keeps D smooth near the expert data.

The policy's adversarial score is D's log-odds of "expert": log sigmoid(z) - log(1 - sigmoid(z)),
which is exactly z. Optional clipping bounds it before group normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(
    expert_logits: torch.Tensor, policy_logits: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class-balanced binary cross-entropy (formula above), without the R1 term.

    expert_logits: [Ne] D's logit for expert responses; policy_logits: [Np] for policy responses.
    Returns (0-dim loss, metrics): `disc/acc`, `disc/acc_expert`, `disc/acc_policy` (threshold at
    z = 0), `disc/expert_logit`, `disc/policy_logit` (means).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if expert_logits.numel() == 0 or policy_logits.numel() == 0:
        raise ValueError(
            f"need expert and policy responses, got {expert_logits.numel()} and {policy_logits.numel()}"
        )
    expert_logits, policy_logits = expert_logits.float().flatten(), policy_logits.float().flatten()
    expert_target = torch.full_like(expert_logits, 1.0 - label_smoothing)
    loss = 0.5 * F.binary_cross_entropy_with_logits(
        expert_logits, expert_target
    ) + 0.5 * F.binary_cross_entropy_with_logits(policy_logits, torch.zeros_like(policy_logits))
    metrics = accuracy(expert_logits, policy_logits)
    metrics["disc/expert_logit"] = expert_logits.detach().mean()
    metrics["disc/policy_logit"] = policy_logits.detach().mean()
    return loss, metrics


def accuracy(expert_logits: torch.Tensor, policy_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fraction classified right at z = 0: overall (over all responses) and per class."""
    correct_expert = (expert_logits.detach() > 0).float()
    correct_policy = (policy_logits.detach() <= 0).float()
    total = correct_expert.sum() + correct_policy.sum()
    return {
        "disc/acc": total / (correct_expert.numel() + correct_policy.numel()),
        "disc/acc_expert": correct_expert.mean(),
        "disc/acc_policy": correct_policy.mean(),
    }


def log_odds_score(logits: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """The policy's adversarial score d from D's logits ([N] -> [N], detached): log-odds = z.

    clip bounds |d| so that one response D is sure about cannot dominate its group's std.
    """
    d = logits.detach().float()
    return d if clip is None else d.clamp(-clip, clip)


def r1_penalty(logits: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """mean over sequences of ||d z_i / d x_i||^2, differentiable (for the discriminator's update).

    logits:        [N] computed from `inputs_embeds` (which must require grad).
    inputs_embeds: [N, S, H] the input embeddings of the (expert) sequences; padding positions
                   get zero gradient when the scorer masks them, so they add nothing.
    """
    if not inputs_embeds.requires_grad:
        raise ValueError(
            "r1_penalty needs inputs_embeds that require grad (embed, then score the embeddings)"
        )
    (grad,) = torch.autograd.grad(logits.sum(), inputs_embeds, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
