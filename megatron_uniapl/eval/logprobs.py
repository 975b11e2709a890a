"""Per-token log-probabilities of given responses under a Hugging Face causal LM, on the CPU.

Used by the distribution analysis to ask: how likely does one fixed model find the policy's
responses, compared with the expert's? The prompt is rendered with the model's chat template
(generation prompt added, Qwen3 thinking disabled) and the response text is tokenized on its own
and appended, exactly as a rollout's response tokens follow its prompt tokens. The template's
end-of-turn token is not appended: only tokens of the response text are scored, for policy and
expert alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from megatron_uniapl.data.schemas import ChatMessage
from megatron_uniapl.tokenizer import Tokenizer, load_tokenizer


def prompt_ids(tokenizer: Tokenizer, messages: Sequence[ChatMessage]) -> list[int]:
    """Token ids of the chat-templated prompt, generation prompt included (the tokenizer layer's
    template, thinking off: the same ids the rollout engine is given)."""
    return tokenizer.apply_chat([{"role": m.role, "content": m.content} for m in messages],
                                add_generation_prompt=True, thinking=False)


def response_ids(tokenizer: Tokenizer, response: str) -> list[int]:
    """Token ids of the response text alone."""
    return tokenizer.encode(response)


class LogProbScorer:
    """Holds a model and tokenizer; `score` returns per-token log-probs of responses."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM

        from megatron_uniapl.convert.hf_io import check_safetensors

        check_safetensors(model_dir)  # names a truncated or corrupt weight file
        self.tokenizer = load_tokenizer(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir),
                                                          dtype=getattr(torch, dtype))
        self.model.eval()

    def score(self, messages: Sequence[ChatMessage], response: str) -> np.ndarray:
        """log p(response token t | prompt, response tokens < t) for every response token, [T]."""
        import torch

        context = prompt_ids(self.tokenizer, messages)
        target = response_ids(self.tokenizer, response)
        if not target:
            return np.zeros(0)
        ids = torch.tensor([context + target])  # [1, P + T]
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0].float()  # [P + T, V]
        # Row i predicts token i + 1, so response token j (at P + j) is scored by row P + j - 1.
        rows = logits[len(context) - 1: len(context) + len(target) - 1]  # [T, V]
        logprobs = torch.log_softmax(rows, dim=-1)
        return logprobs.gather(1, torch.tensor(target)[:, None])[:, 0].numpy().astype(np.float64)
