"""Name and shape checks of a weight update, including the tied output head (no engine needed)."""

from __future__ import annotations

import pytest
import torch

from megatron_uniapl.rollout.weight_manifest import EMBEDDING, HEAD, WeightManifest

SHAPES = {EMBEDDING: (10, 4), "model.norm.weight": (4,)}


def names(pairs):
    return [n for n, _ in pairs]


def test_tied_head_is_mirrored_from_the_embedding_and_trainer_head_dropped():
    tracker = WeightManifest(SHAPES, tied_embeddings=True).start_update()
    emb = torch.zeros(10, 4)
    sent = tracker.check_bucket([(EMBEDDING, emb), (HEAD, torch.ones(10, 4))])
    assert names(sent) == [EMBEDDING, HEAD] and sent[1][1] is emb
    assert tracker.missing() == ["model.norm.weight"]
    with pytest.raises(ValueError, match=r"'lm_head\.weight' has shape \(9, 4\)"):
        WeightManifest(SHAPES, True).start_update().check_bucket([(HEAD, torch.ones(9, 4))])


def test_untied_manifest_needs_no_mirroring():
    shapes = dict(SHAPES, **{HEAD: (10, 4)})
    tracker = WeightManifest(shapes, tied_embeddings=False).start_update()
    assert names(tracker.check_bucket([(EMBEDDING, torch.zeros(10, 4))])) == [EMBEDDING]
    assert tracker.missing() == [HEAD, "model.norm.weight"]


def test_a_bad_bucket_is_refused_whole():
    tracker = WeightManifest(SHAPES, tied_embeddings=False).start_update()
    with pytest.raises(ValueError, match=r"'model\.nrom\.weight' is not in the engine's model"):
        tracker.check_bucket([(EMBEDDING, torch.zeros(10, 4)), ("model.nrom.weight", torch.zeros(4))])
    assert tracker.received == set()  # nothing of the refused bucket counts
    tracker.check_bucket([("model.norm.weight", torch.zeros(4))])
    with pytest.raises(ValueError, match="sent twice"):
        tracker.check_bucket([("model.norm.weight", torch.zeros(4))])
