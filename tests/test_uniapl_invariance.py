"""Gradient accumulation and data parallelism give the gradient of one big batch.

The same mixed batch (demos and grouped rollouts) is trained three ways with a tiny torch model,
all four terms on (SFT, task and adversarial surrogates with TIS, k3 KL):
  (a) a reference written independently here: a padded [B, S] batch and an explicit per-token
      Python loop over the UniAPL objective with global token means;
  (b) one packed micro-batch on one rank;
  (c) packed into several micro-batches on 2 simulated data-parallel ranks, gradients summed.
All three must agree to float32 precision. The model maps each token independently
(Embedding + Linear), so the packing of samples into rows cannot change its outputs; what is under
test is the packed alignment, the loss terms and the reduction.
"""

import copy
import math
import random

import torch

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.config.objective import PolicyGradientConfig
from megatron_uniapl.config.variants import objective_for_variant
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.logprobs import logprobs_from_logits
from megatron_uniapl.losses.uniapl import uniapl_loss

VOCAB = 23


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


def _models():
    torch.manual_seed(0)
    model = TinyLM()
    old, ref = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():  # pi_old and pi_ref differ from pi_theta, so ratios move, some clip, KL > 0
        for p, q in zip(old.parameters(), ref.parameters()):
            p.add_(0.3 * torch.randn_like(p))
            q.add_(0.5 * torch.randn_like(q))
    return model, old, ref


def _samples():
    rng = random.Random(0)
    samples = []
    for _ in range(5):  # demonstrations
        samples.append(
            Sample(
                [rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))],
                [rng.randrange(VOCAB) for _ in range(rng.randint(1, 9))],
                SampleKind.DEMO,
            )
        )
    for g in range(3):  # 3 prompts x 4 responses
        prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))]
        for _ in range(4):
            n = rng.randint(1, 9)
            samples.append(
                Sample(
                    prompt,
                    [rng.randrange(VOCAB) for _ in range(n)],
                    SampleKind.ROLLOUT,
                    group_id=g,
                    loss_mask=[int(rng.random() > 0.2) for _ in range(n)],
                    rollout_logprobs=[-rng.uniform(0.5, 4.0) for _ in range(n)],
                    rewards={"task": float(rng.random() > 0.5)},
                    disc_score=rng.gauss(0, 1),
                )
            )
    return samples


def _reference_grads(model, old, ref, samples, w, pg):
    """Objective written out token by token from the samples: no packing, no library losses."""
    n_sft = sum(len(s.response_ids) for s in samples if s.kind == SampleKind.DEMO)
    n_roll = sum(sum(s.loss_mask) for s in samples if s.kind == SampleKind.ROLLOUT)
    total = torch.zeros(())
    for s in samples:
        seq = torch.tensor(s.prompt_ids + s.response_ids)
        logp_all = torch.log_softmax(model(seq), -1)
        with torch.no_grad():
            old_all = torch.log_softmax(old(seq), -1)
            ref_all = torch.log_softmax(ref(seq), -1)
        p = len(s.prompt_ids)
        for j, tok in enumerate(s.response_ids):
            lp = logp_all[p + j - 1, tok]
            if s.kind == SampleKind.DEMO:
                total = total + w.mu * (-lp) / n_sft
                continue
            if not s.loss_mask[j]:
                continue
            old_lp = old_all[p + j - 1, tok].item()
            tis = min(math.exp(old_lp - s.rollout_logprobs[j]), pg.tis_cap)
            rho = torch.exp(lp - old_lp)
            for weight, a in ((1 - w.mu, s.advantages["task"]), (w.lambda_adv, s.advantages["adv"])):
                surr = torch.minimum(rho * a, torch.clamp(rho, 1 - pg.clip_low, 1 + pg.clip_high) * a)
                total = total + weight * tis * (-surr) / n_roll
            log_r = ref_all[p + j - 1, tok] - lp  # k3 = exp(x) - 1 - x, x = log pi_ref / pi
            total = total + w.beta * (torch.exp(log_r) - 1 - log_r) / n_roll
    total.backward()
    return [p.grad.clone() for p in model.parameters()], total.item()


def _packed_grads(model, old, ref, packed, w, pg, rank_count):
    grads = [torch.zeros_like(p) for p in model.parameters()]
    value = 0.0
    for rank in range(rank_count):
        replica = copy.deepcopy(model)  # each data-parallel rank holds its own copy
        for mb in packed.micro_batches[rank]:
            logprobs = logprobs_from_logits(replica(mb.input_ids), mb.targets)
            with torch.no_grad():
                mb.old_logprobs = logprobs_from_logits(old(mb.input_ids), mb.targets)
                ref_logprobs = logprobs_from_logits(ref(mb.input_ids), mb.targets)
            loss, _ = uniapl_loss(
                logprobs,
                weights=w,
                pg=pg,
                global_counts=packed.term_counts(),
                ref_logprobs=ref_logprobs,
                **mb.loss_inputs(),
            )
            loss.backward()  # accumulates over micro-batches
            value += loss.item()
        for g, p in zip(grads, replica.parameters()):
            g += p.grad  # the data-parallel all-reduce is a sum
    return grads, value


def test_micro_batches_and_ranks_match_one_big_batch():
    pg = PolicyGradientConfig(clip_low=0.2, clip_high=0.28, tis_cap=2.0)
    cfg = objective_for_variant("uniapl", mu=0.4, lambda_adv=0.3, beta=0.05, pg=pg)
    w = cfg.weights_at(0)
    samples = _samples()
    assign_advantages(samples, w, pg)
    model, old, ref = _models()
    ref_grads, ref_value = _reference_grads(copy.deepcopy(model), old, ref, samples, w, pg)

    one = pack_samples(samples, max_tokens_per_micro_batch=512)
    many = pack_samples(samples, max_tokens_per_micro_batch=24, dp_size=2)
    assert len(one.micro_batches[0]) == 1 and len(many.micro_batches[0]) >= 3
    for packed, ranks in ((one, 1), (many, 2)):
        grads, value = _packed_grads(model, old, ref, packed, w, pg, ranks)
        assert abs(value - ref_value) < 1e-5
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 1e-3 for g in ref_grads)


def test_clipping_actually_happens_in_the_invariance_batch():
    # Guards the test above against a degenerate batch where clipping (or TIS) never matters.
    pg = PolicyGradientConfig(clip_low=0.2, clip_high=0.28, tis_cap=2.0)
    w = objective_for_variant("uniapl", mu=0.4, lambda_adv=0.3, pg=pg).weights_at(0)
    samples = _samples()
    assign_advantages(samples, w, pg)
    model, old, _ = _models()
    packed = pack_samples(samples, max_tokens_per_micro_batch=512)
    mb = packed.micro_batches[0][0]
    mb.old_logprobs = logprobs_from_logits(old(mb.input_ids), mb.targets).detach()
    _, metrics = uniapl_loss(
        logprobs_from_logits(model(mb.input_ids), mb.targets),
        weights=w,
        pg=pg,
        global_counts=packed.term_counts(),
        **mb.loss_inputs(),
    )
    assert 0.05 < metrics["pg_task/clip_frac"].item() < 0.95
    assert metrics["pg_task/tis_capped_frac"].item() > 0.0
