"""A discriminator trained alongside the policy: true adversarial learning, with its own controls.

The paper kept its discriminator frozen for stability; this one learns each step to tell expert
responses from the current policy's responses to the same prompts, so its signal keeps pointing
at whatever still separates the two. That is what makes it unstable, so it has its own optimizer
(own learning rate), an update ratio (discriminator steps per policy step, fractional allowed),
one-sided label smoothing, an optional R1 gradient penalty, gradient clipping and a bound on the
score it hands the policy. Its accuracy is the metric to watch: near 1.0 the policy's signal
saturates, near 0.5 it carries no information.

This version works on any torch module that maps token ids to one logit per sequence
(`SequenceScorer`); the Megatron backbone (`megatron_backbone.MegatronSequenceScorer`, sharded like
the policy) plugs in behind the same calls and supplies its own tensor-parallel gradient clipping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig
from megatron_uniapl.discriminator.base import check_triples, pad_right, render
from megatron_uniapl.discriminator.classifier_loss import (
    discriminator_loss,
    log_odds_score,
    r1_penalty,
)


@runtime_checkable
class SequenceScorer(Protocol):
    """A module: (input_ids [N, S], attention_mask [N, S]) -> logits [N] ("expert" log-odds)."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def parameters(self): ...


@runtime_checkable
class EmbeddingSequenceScorer(SequenceScorer, Protocol):
    """A scorer that exposes its embedding step, which the R1 penalty differentiates through."""

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, S] token ids -> [N, S, H] input embeddings."""
        ...

    def score_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[N, S, H] embeddings -> [N] logits; must equal `__call__` on the same tokens."""
        ...


class CoTrainedDiscriminator:
    """A `SequenceScorer` with its optimizer, update schedule and `Discriminator.score`."""

    def __init__(self, module: torch.nn.Module, config: CoTrainedDiscriminatorConfig, tokenizer=None):
        config.validate()
        if config.r1_gamma > 0 and not isinstance(module, EmbeddingSequenceScorer):
            raise ValueError(
                f"discriminator.cotrained.r1_gamma={config.r1_gamma} needs a scorer with embed() and "
                f"score_embeddings(); {type(module).__name__} has not"
            )
        self.module = module
        self.config = config
        self.tokenizer = tokenizer
        self.optimizer = torch.optim.AdamW(
            [p for p in module.parameters() if p.requires_grad],
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.updates_done = 0

    def updates_at(self, policy_step: int) -> int:
        """How many discriminator updates to run at `policy_step` (spreads a fractional ratio)."""
        r = self.config.update_ratio
        return math.floor((policy_step + 1) * r + 1e-9) - math.floor(policy_step * r + 1e-9)

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor, with_embeds: bool = False):
        if not with_embeds:
            return self.module(ids, mask), None
        embeds = self.module.embed(ids)
        if not embeds.requires_grad:
            embeds.requires_grad_(True)
        return self.module.score_embeddings(embeds, mask), embeds

    def update(self, expert_ids, expert_mask, policy_ids, policy_mask) -> dict[str, float]:
        """One optimizer step on expert ([Ne, S]) vs policy ([Np, S']) token ids and masks."""
        self.module.train()
        use_r1 = self.config.r1_gamma > 0
        expert_logits, embeds = self._logits(expert_ids, expert_mask, with_embeds=use_r1)
        policy_logits, _ = self._logits(policy_ids, policy_mask)
        loss, metrics = discriminator_loss(expert_logits, policy_logits, self.config.label_smoothing)
        if use_r1:
            penalty = r1_penalty(expert_logits, embeds)
            loss = loss + 0.5 * self.config.r1_gamma * penalty
            metrics["disc/r1"] = penalty.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A data-parallel scorer averages its gradients over the ranks' batches before clipping.
        sync = getattr(self.module, "finish_grad_sync", None)
        if sync is not None:
            sync()
        if self.config.grad_clip is not None:
            # A sharded (tensor-parallel) scorer brings its own global-norm clipping.
            clip = getattr(self.module, "clip_grad_norm", None)
            if clip is not None:
                metrics["disc/grad_norm"] = clip(self.config.grad_clip)
            else:
                metrics["disc/grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.module.parameters(), self.config.grad_clip
                )
        self.optimizer.step()
        self.updates_done += 1
        metrics["disc/loss"] = loss.detach()
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[N] clipped log-odds of "expert" for token ids [N, S] (eval mode, no grad)."""
        self.module.eval()
        return log_odds_score(self.module(input_ids, attention_mask), self.config.score_clip)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and mask [N, S] of `texts`, each cut to its last `max_length` tokens."""
        if self.tokenizer is None:
            raise ValueError("scoring text needs a tokenizer: pass tokenizer= to CoTrainedDiscriminator")
        if hasattr(self.tokenizer, "pad_id"):  # the project's tokenizer layer (megatron_uniapl.tokenizer)
            encoded = [self.tokenizer.encode(t) for t in texts]
            pad = self.tokenizer.pad_id
        else:  # a Hugging Face tokenizer
            encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
            pad = self.tokenizer.pad_token_id or 0
        return pad_right([ids[-self.config.max_length :] for ids in encoded], pad)

    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """`Discriminator.score`: the clipped log-odds of each rendered triple."""
        check_triples(prompts, references, responses)
        ids, mask = self.encode(render(self.config.template, prompts, references, responses))
        return self.score_ids(ids, mask).tolist()

    def cotrain(self, policy_step: int, prompts: Sequence[str], references: Sequence[str],
                responses: Sequence[str]) -> dict[str, float]:
        """This policy step's discriminator updates (`updates_at`): the expert's reference
        answers (one per distinct prompt) against the policy's responses, laid out with the
        scoring template so training and scoring see the same text."""
        count = self.updates_at(policy_step)
        if count == 0 or not responses:
            return {}
        check_triples(prompts, references, responses)
        expert = dict(zip(prompts, references))
        expert_ids, expert_mask = self.encode(render(self.config.template, list(expert), list(expert.values()), list(expert.values())))
        policy_ids, policy_mask = self.encode(render(self.config.template, prompts, references, responses))
        metrics: dict[str, float] = {}
        for _ in range(count):
            metrics = self.update(expert_ids, expert_mask, policy_ids, policy_mask)
        return metrics

    def state_dict(self) -> dict:
        """Everything a resume needs: weights, optimizer moments, update count."""
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates_done = int(state["updates_done"])
