"""The co-trained discriminator on the Megatron Qwen3 backbone learns a toy separation task.

Two overlapping token distributions (expert favours low ids, policy high ids); a 1-layer Qwen3
backbone with a small vocabulary, random initialization, trained through `CoTrainedDiscriminator`
(label smoothing, clipping through the backbone's own TP-aware norm). Held-out accuracy must
exceed 0.9. TP=2 parity is in test_megatron_glue_parallel.py.
"""

import pytest
import torch

from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig
from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.discriminator.classifier_loss import accuracy
from megatron_uniapl.discriminator.cotrained import CoTrainedDiscriminator
from megatron_uniapl.model.hf_config import Qwen3Arch

ARCH = Qwen3Arch(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


def _draw(gen, n, expert, vocab=40, width=16):
    weights = torch.linspace(4.0, 0.25, vocab) if expert else torch.linspace(0.25, 4.0, vocab)
    lengths = torch.randint(8, width + 1, (n,), generator=gen)
    ids = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, :length] = torch.multinomial(weights, length, replacement=True, generator=gen)
        mask[i, :length] = 1
    return ids, mask


def _held_out_accuracy(disc):
    gen = torch.Generator().manual_seed(99)
    expert, policy = _draw(gen, 200, True), _draw(gen, 200, False)
    return accuracy(disc.score_ids(*expert), disc.score_ids(*policy))["disc/acc"].item()


def test_megatron_discriminator_learns_toy_separation(megatron_world):
    from megatron_uniapl.discriminator.megatron_backbone import (
        build_megatron_discriminator,
    )

    torch.manual_seed(0)
    scorer = build_megatron_discriminator(ARCH, ModelOptions(dtype="float32", spec="portable"))
    disc = CoTrainedDiscriminator(scorer, CoTrainedDiscriminatorConfig(lr=3e-3, label_smoothing=0.1))
    before = _held_out_accuracy(disc)
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        metrics = disc.update(*_draw(gen, 32, True), *_draw(gen, 32, False))
    after = _held_out_accuracy(disc)
    assert before < 0.75 and after > 0.9, (before, after)
    assert metrics["disc/grad_norm"] > 0
    # its state (backbone, head, AdamW moments) restores into a fresh scorer: resume-exact
    clone = CoTrainedDiscriminator(
        build_megatron_discriminator(ARCH, ModelOptions(dtype="float32", spec="portable"), head_seed=3),
        disc.config,
    )
    clone.load_state_dict(disc.state_dict())
    batch = (*_draw(gen, 8, True), *_draw(gen, 8, False))
    assert clone.update(*batch) == pytest.approx(disc.update(*batch))
    # a packed row scores each sequence as if it were alone (padding and neighbours do not leak)
    ids, mask = _draw(torch.Generator().manual_seed(5), 3, True)
    together = disc.score_ids(ids, mask)
    alone = torch.cat(
        [
            disc.score_ids(ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())])
            for i in range(3)
        ]
    )
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_megatron_discriminator_rejects_bad_input(megatron_world):
    from megatron_uniapl.discriminator.megatron_backbone import (
        build_megatron_discriminator,
    )

    with pytest.raises(ValueError, match="pipeline_parallel must be 1"):
        build_megatron_discriminator(
            ARCH, ModelOptions(pipeline_parallel=2, dtype="float32", spec="portable")
        )
    scorer = build_megatron_discriminator(ARCH, ModelOptions(dtype="float32", spec="portable"))
    with pytest.raises(ValueError, match="sequence 1 has no tokens"):
        scorer(torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [0, 0, 0]]))
