"""Which Hugging Face tensors a weight update must contain, checked before anything is loaded.

A push with a misspelled name or a wrong shape must fail before it touches the live engine, with
the tensor named; a push that leaves tensors out must be noticed, because the engine would then
hold a mix of versions. The expected set is the checkpoint the engine was started from (its
safetensors headers), i.e. full, unsharded tensors whatever the engine's tensor parallelism.

Tied embeddings: the checkpoint has no `lm_head.weight`, but vLLM's CPU backend keeps a repacked
copy of the output head that is only refreshed when `lm_head.weight` is loaded. The embedding is
therefore also sent under that name, and an `lm_head.weight` from the trainer is checked and
dropped (tied means it is the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

EMBEDDING = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


@dataclass
class WeightManifest:
    """Expected tensor names and shapes of one model."""

    shapes: dict[str, tuple[int, ...]]
    """Hugging Face name -> full shape."""
    tied_embeddings: bool
    """`tie_word_embeddings` of the model's config."""

    def start_update(self) -> UpdateTracker:
        return UpdateTracker(self)


@dataclass
class UpdateTracker:
    """The state of one update: what arrived so far."""

    manifest: WeightManifest
    received: set[str] = field(default_factory=set)
    """Names accepted so far."""
    loaded_any: bool = False
    """Whether any bucket reached the engine (after which an abort leaves mixed weights)."""

    def check_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Check every name and shape of `bucket` (raising ValueError naming the first bad tensor,
        before anything of the bucket is accepted); return the tensors to hand to the engine."""
        shapes = self.manifest.shapes
        tied = self.manifest.tied_embeddings and HEAD not in shapes
        seen = set(self.received)
        for name, tensor in bucket:
            expected = shapes.get(EMBEDDING if (tied and name == HEAD) else name)
            if expected is None:
                raise ValueError(f"update_weights: tensor {name!r} is not in the engine's model")
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"update_weights: tensor {name!r} has shape {tuple(tensor.shape)}, the engine's model "
                    f"expects {expected}"
                )
            if name in seen:
                raise ValueError(f"update_weights: tensor {name!r} was sent twice in one update")
            seen.add(name)
        self.received = seen
        to_send = []
        for name, tensor in bucket:
            if tied and name == HEAD:
                continue
            to_send.append((name, tensor))
            if tied and name == EMBEDDING:
                to_send.append((HEAD, tensor))
        return to_send

    def missing(self) -> list[str]:
        """Expected names not received, sorted."""
        return sorted(set(self.manifest.shapes) - self.received)
