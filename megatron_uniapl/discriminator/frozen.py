"""The paper's discriminator: a frozen, reference-conditioned reward model (a HF sequence classifier).

The checkpoint is any `AutoModelForSequenceClassification` with one output (a reward head) or two
(a binary classifier; its log-odds of label 1 is the score). It is loaded once, put in eval mode
with gradients off, and never updated: the policy cannot move the goalposts, which is why the
paper preferred it to adversarial co-training. Inputs are batched by length (sorted, so padding is
small) and scores are returned in the caller's order.

Pooling is the model's own (the last non-padding token), so a batched score equals what the
transformers model gives for the same text alone. Over-long inputs are cut from the LEFT by
default: the candidate response sits at the end of the template and must survive truncation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from megatron_uniapl.discriminator.base import POLAR_LIKE_TEMPLATE, check_triples, render, validate_template

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FrozenScorerConfig:
    """Where the frozen reward model is and how it is fed."""

    path: str
    """Directory of a Hugging Face checkpoint (config, weights, tokenizer files)."""
    template: str = POLAR_LIKE_TEMPLATE
    """Input layout with {prompt}, {reference}, {response} (see discriminator.base)."""
    batch_size: int = 16
    """Triples per forward pass."""
    max_length: int = 4096
    """Longest input in tokens; longer ones are truncated from `truncation_side`."""
    truncation_side: str = "left"
    """"left" keeps the end of the input (the candidate response); "right" keeps the start."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    dtype: str = "float32"
    """Weights and compute dtype: "float32", "bfloat16" or "float16"."""
    tokenizer_path: str | None = None
    """Tokenizer directory when it is not `path`."""

    def validate(self, where: str = "discriminator.frozen") -> None:
        """Raise ValueError naming the offending field."""
        validate_template(self.template, f"{where}.template")
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ValueError(f"{where}.batch_size and {where}.max_length must be > 0")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(
                f"{where}.truncation_side must be 'left' or 'right', got {self.truncation_side!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}.dtype is {self.dtype!r}; choose one of {sorted(DTYPES)}")


class FrozenRewardModel:
    """`Discriminator` backed by a frozen HF sequence-classification checkpoint."""

    def __init__(self, config: FrozenScorerConfig):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        config.validate()
        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_path or config.path)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = config.truncation_side
        model = AutoModelForSequenceClassification.from_pretrained(config.path, dtype=DTYPES[config.dtype])
        if model.config.num_labels not in (1, 2):
            raise ValueError(
                f"{config.path}: num_labels is {model.config.num_labels}; a discriminator needs "
                f"1 (reward) or 2 (binary)"
            )
        if model.config.pad_token_id is None:
            if self.tokenizer.pad_token_id is None:
                raise ValueError(
                    f"{config.path}: neither the model config nor the tokenizer defines a pad token"
                )
            model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = model.config.pad_token_id
        model.requires_grad_(False)
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """Scores in input order: the reward head's output, or log p(1)/p(0) for a binary head."""
        n = check_triples(prompts, references, responses)
        texts = render(self.config.template, prompts, references, responses)
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        order = sorted(range(n), key=lambda i: len(encoded[i]))
        truncated = sum(1 for ids in encoded if len(ids) > self.config.max_length)
        if truncated:
            log.warning(
                "%d of %d discriminator inputs exceed %d tokens and are truncated on the %s",
                truncated,
                n,
                self.config.max_length,
                self.config.truncation_side,
            )
        scores = [0.0] * n
        for start in range(0, n, self.config.batch_size):
            chunk = order[start : start + self.config.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in chunk],
                add_special_tokens=False,
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            for i, v in zip(chunk, values.tolist()):
                scores[i] = v
        return scores
