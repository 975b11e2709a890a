"""The co-trained discriminator: loss by hand, gradients vs a reference, and it learns a toy task."""

import copy
import math

import pytest
import torch

from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig
from megatron_uniapl.discriminator.classifier_loss import (
    accuracy,
    discriminator_loss,
    log_odds_score,
    r1_penalty,
)
from megatron_uniapl.discriminator.cotrained import CoTrainedDiscriminator


class MeanPoolScorer(torch.nn.Module):
    """Test model: embedding, masked mean over positions, linear head -> one logit per sequence."""

    def __init__(self, vocab=40, dim=16):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, 1)

    def embed(self, input_ids):
        return self.embedding(input_ids)

    def score_embeddings(self, embeds, attention_mask):
        m = attention_mask.unsqueeze(-1).to(embeds.dtype)
        return self.head((embeds * m).sum(1) / m.sum(1)).squeeze(-1)

    def forward(self, input_ids, attention_mask):
        return self.score_embeddings(self.embed(input_ids), attention_mask)


class NoEmbedScorer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return self.w * attention_mask.sum(1)


SP = lambda z: math.log1p(math.exp(z))  # noqa: E731  softplus: BCE(z, 1) = SP(-z), BCE(z, 0) = SP(z)


def test_loss_hand_values():
    loss, m = discriminator_loss(torch.tensor([2.0]), torch.tensor([-1.0]))
    assert loss.item() == pytest.approx(0.5 * (SP(-2) + SP(-1)))  # 0.2200948
    # One-sided smoothing 0.1: expert target 0.9 -> 0.9 * SP(-2) + 0.1 * SP(2).
    loss, _ = discriminator_loss(torch.tensor([2.0]), torch.tensor([-1.0]), label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.5 * (0.9 * SP(-2) + 0.1 * SP(2) + SP(-1)))  # 0.3200948
    acc = accuracy(torch.tensor([2.0, -1.0]), torch.tensor([-1.0, 0.5, -3.0]))
    assert (
        acc["disc/acc"].item(),
        acc["disc/acc_expert"].item(),
        acc["disc/acc_policy"].item(),
    ) == pytest.approx((0.6, 0.5, 2 / 3))
    assert log_odds_score(torch.tensor([-20.0, 0.3, 12.0]), clip=10.0).tolist() == pytest.approx(
        [-10.0, 0.3, 10.0]
    )
    # log-odds of sigmoid(z) is z itself
    z = torch.tensor([-3.0, 0.0, 1.5])
    assert (torch.log(torch.sigmoid(z)) - torch.log1p(-torch.sigmoid(z))).tolist() == pytest.approx(
        log_odds_score(z).tolist(), abs=1e-5
    )


def test_loss_gradient_matches_reference_formula():
    torch.manual_seed(0)
    e = torch.randn(5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, dtype=torch.float64, requires_grad=True)
    loss, _ = discriminator_loss(e, p, label_smoothing=0.2)
    ge, gp = torch.autograd.grad(loss, (e, p))
    # d/dz BCE(z, y) = sigmoid(z) - y, each class averaged, halves averaged.
    ref_e = [(1 / (1 + math.exp(-z)) - 0.8) * 0.5 / 5 for z in e.tolist()]
    ref_p = [(1 / (1 + math.exp(-z)) - 0.0) * 0.5 / 3 for z in p.tolist()]
    assert ge.tolist() == pytest.approx(ref_e, abs=1e-7)
    assert gp.tolist() == pytest.approx(ref_p, abs=1e-7)


def test_r1_penalty_hand_value():
    model = MeanPoolScorer(vocab=5, dim=3)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 2.0, 2.0]]))  # |w|^2 = 9
    ids = torch.tensor([[1, 2, 0, 0], [3, 4, 1, 2]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    embeds = model.embed(ids)
    # z = w . mean(x over L positions): dz/dx_t = w / L on kept positions -> ||.||^2 = |w|^2 / L.
    assert r1_penalty(model.score_embeddings(embeds, mask), embeds).item() == pytest.approx(
        0.5 * (9 / 2 + 9 / 4)
    )


def test_update_ratio_schedule_and_config_errors():
    def make(ratio):
        return CoTrainedDiscriminator(MeanPoolScorer(), CoTrainedDiscriminatorConfig(update_ratio=ratio))

    assert [make(0.5).updates_at(t) for t in range(4)] == [0, 1, 0, 1]
    assert [make(2.0).updates_at(t) for t in range(3)] == [2, 2, 2]
    assert sum(make(1 / 3).updates_at(t) for t in range(9)) == 3
    with pytest.raises(ValueError, match="discriminator.cotrained.lr must be > 0"):
        make(1.0).config.__class__(lr=0.0).validate()
    with pytest.raises(ValueError, match=r"r1_gamma=1.0 needs a scorer with embed\(\)"):
        CoTrainedDiscriminator(NoEmbedScorer(), CoTrainedDiscriminatorConfig(r1_gamma=1.0))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        CoTrainedDiscriminatorConfig(label_smoothing=0.5).validate()


def _draw(gen, n, expert, vocab=40):
    # Two overlapping token distributions: expert favours low ids, policy high ids.
    weights = torch.linspace(4.0, 0.25, vocab) if expert else torch.linspace(0.25, 4.0, vocab)
    lengths = torch.randint(5, 16, (n,), generator=gen)
    ids = torch.zeros(n, 15, dtype=torch.long)
    mask = torch.zeros(n, 15, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, :length] = torch.multinomial(weights, length, replacement=True, generator=gen)
        mask[i, :length] = 1
    return ids, mask


def _held_out_accuracy(disc, gen):
    e_ids, e_mask = _draw(gen, 200, True)
    p_ids, p_mask = _draw(gen, 200, False)
    return accuracy(disc.score_ids(e_ids, e_mask), disc.score_ids(p_ids, p_mask))["disc/acc"].item()


@pytest.mark.parametrize("r1_gamma", [0.0, 1.0])
def test_learns_to_separate_expert_from_policy(r1_gamma):
    torch.manual_seed(0)
    disc = CoTrainedDiscriminator(
        MeanPoolScorer(), CoTrainedDiscriminatorConfig(lr=0.05, label_smoothing=0.1, r1_gamma=r1_gamma)
    )
    gen = torch.Generator().manual_seed(1)
    before = _held_out_accuracy(disc, torch.Generator().manual_seed(99))
    for _ in range(150):
        metrics = disc.update(*_draw(gen, 32, True), *_draw(gen, 32, False))
    after = _held_out_accuracy(disc, torch.Generator().manual_seed(99))
    assert before < 0.75 and after > 0.9, (before, after)
    assert metrics["disc/acc"] > 0.8 and (r1_gamma == 0 or metrics["disc/r1"] > 0)
    # Resume: a fresh copy loaded from the state dict scores identically and continues identically.
    clone = CoTrainedDiscriminator(MeanPoolScorer(), disc.config)
    clone.load_state_dict(copy.deepcopy(disc.state_dict()))
    batch = (*_draw(gen, 8, True), *_draw(gen, 8, False))
    assert clone.update(*batch) == pytest.approx(disc.update(*batch))
    probe = _draw(gen, 4, True)
    assert torch.equal(clone.score_ids(*probe), disc.score_ids(*probe))


def test_scores_text_through_a_tokenizer():
    from transformers import AutoTokenizer

    from megatron_uniapl.assets import qwen3_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    torch.manual_seed(0)
    disc = CoTrainedDiscriminator(
        MeanPoolScorer(vocab=151936, dim=4),
        CoTrainedDiscriminatorConfig(template="Q: {prompt}\nA: {response}"),
        tok,
    )
    scores = disc.score(["2+2?", "Name a colour."], ["4", "red"], ["4", "It is blue, probably."])
    for text, s in zip(["Q: 2+2?\nA: 4", "Q: Name a colour.\nA: It is blue, probably."], scores):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        assert s == pytest.approx(disc.score_ids(ids, torch.ones_like(ids)).item(), abs=1e-6)
