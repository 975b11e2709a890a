"""The paper's discriminator: a frozen, reference-conditioned reward model (a HF sequence classifier).

The checkpoint is any `AutoModelForSequenceClassification` with one output (a reward head) or two
(a binary classifier; its log-odds of label 1 is the score). It is loaded once, put in eval mode
with gradients off, and never updated: the policy cannot move the goalposts, which is why the
paper preferred it to adversarial co-training. Inputs are batched by length (sorted, so padding is
small) and scores are returned in the caller's order.

Pooling is the model's own (the last non-padding token), so a batched score equals what the
transformers model gives for the same text alone. Over-long inputs are cut from the LEFT by
default: the candidate response sits at the end of the template and must survive truncation.

The input layout is `FrozenScorerConfig.preset`: "custom" (a template) or "polar" (the layout of
InternLM's POLAR reward models); `discriminator.polar_format` turns triples into token ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from megatron_uniapl.config.discriminator import FrozenScorerConfig
from megatron_uniapl.discriminator.base import check_triples, pad_right
from megatron_uniapl.discriminator.polar_format import check_tokenizer, encode_triples, truncate

log = logging.getLogger(__name__)


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
        self.layout = config.layout()
        tokenizer_path = config.tokenizer_path or config.path
        self.tokenizer = _from_pretrained(AutoTokenizer, tokenizer_path, config.trust_remote_code)
        check_tokenizer(self.tokenizer, self.layout, tokenizer_path)
        model = _from_pretrained(
            AutoModelForSequenceClassification, config.path, config.trust_remote_code,
            dtype=getattr(torch, config.dtype),
        )
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
        encoded = encode_triples(self.tokenizer, self.layout, prompts, references, responses)
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
            rows = [
                truncate(encoded[i], self.config.max_length, self.config.truncation_side, self.layout.add_bos)
                for i in chunk
            ]
            input_ids, attention_mask = pad_right(rows, self.tokenizer.pad_token_id)
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
            ).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            for i, v in zip(chunk, values.tolist()):
                scores[i] = v
        return scores


def _from_pretrained(auto_class, path: str, trust_remote_code: bool, **kwargs):
    """`auto_class.from_pretrained(path)`; a refusal to run the checkpoint's code names our field."""
    try:
        # Always a bool: with None, transformers asks on the terminal whether to run the code.
        return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as err:
        if trust_remote_code or "trust_remote_code" not in str(err):
            raise
        raise ValueError(
            f"{path}: the checkpoint ships its own code for {auto_class.__name__} (an `auto_map` in its "
            f"config), which transformers runs only when allowed; set "
            f"discriminator.frozen.trust_remote_code=true if you trust it"
        ) from err
