"""The Megatron glue in one process (TP = PP = DP = 1): log-probs, paper variants, the step.

What each test proves:
- the vocabulary-parallel functions without a group are the plain ones (values and gradients);
- with a temperature T they are those of softmax(z / T) (float64 reference), exactly today's at T = 1;
- packed micro-batches through the Megatron model give the log-probs that transformers gives for
  each sample alone, at exactly the positions the loss masks point to, rollout tokens at the
  rollout temperature and demonstration tokens at 1 in the same batch;
- the SFT variant's loss is the token-mean NLL of the demonstrations computed from HF logits;
- the GRPO variant's gradient does not depend on the demonstrations in the batch;
- a non-finite loss skips the update (weights and schedule unchanged); settings are validated.
"""

from __future__ import annotations

import pytest
import torch
from glue_utils import all_terms_objective, mixed_samples

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.algorithm.loss import (
    UniAPLLoss,
    compute_logprobs,
    rank_batches,
    token_temperature,
)
from megatron_uniapl.config.variants import objective_for_variant
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import SampleKind
from megatron_uniapl.losses.logprobs import entropy_from_logits, logprobs_from_logits
from megatron_uniapl.losses.vocab_parallel import (
    vocab_parallel_entropy,
    vocab_parallel_logprobs,
)
from megatron_uniapl.model.distributed import (
    OptimizerSettings,
    build_optimizer,
    train_step,
    wrap_ddp,
)


def test_vocab_parallel_without_group_is_the_plain_function():
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(3, 4, 50, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 50, (3, 4), generator=g)
    c = torch.randn(3, 4, generator=g)
    lp, ent = vocab_parallel_logprobs(logits, targets, group=None), vocab_parallel_entropy(logits, group=None)
    (grad,) = torch.autograd.grad((c * lp + ent).sum(), logits)
    ref_lp, ref_ent = logprobs_from_logits(logits, targets), entropy_from_logits(logits)
    (ref_grad,) = torch.autograd.grad((c * ref_lp + ref_ent).sum(), logits)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=2e-6)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=5e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=2e-6)
    # bf16 logits: the gradient comes back in the logits' dtype
    half = logits.detach().bfloat16().requires_grad_(True)
    vocab_parallel_logprobs(half, targets, group=None).sum().backward()
    assert half.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("temperature", [0.5, 0.7, 1.3])
def test_tempered_vocab_parallel_functions_are_those_of_the_scaled_logits(temperature):
    g = torch.Generator().manual_seed(1)
    logits = (4 * torch.randn(3, 4, 50, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 50, (3, 4), generator=g)
    c = torch.randn(3, 4, generator=g)
    lp = vocab_parallel_logprobs(logits, targets, group=None, temperature=temperature)
    ent = vocab_parallel_entropy(logits, group=None, temperature=temperature)
    (grad,) = torch.autograd.grad((c * lp + ent).sum(), logits)
    z = logits.detach().double().requires_grad_(True)
    ref_all = torch.log_softmax(z / temperature, -1)
    ref_lp = ref_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ref_ent = -(ref_all.exp() * ref_all).sum(-1)
    (ref_grad,) = torch.autograd.grad((c * ref_lp + ref_ent).sum(), z)
    torch.testing.assert_close(lp.double(), ref_lp.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-5)
    # A per-position temperature tensor: T where given, 1 (the plain values) elsewhere.
    per_pos = torch.ones(3, 4)
    per_pos[1] = temperature
    mixed = vocab_parallel_logprobs(logits, targets, group=None, temperature=per_pos).detach()
    plain = vocab_parallel_logprobs(logits, targets, group=None).detach()
    torch.testing.assert_close(mixed[1].double(), ref_lp[1].detach(), rtol=0, atol=1e-5)
    assert torch.equal(mixed[[0, 2]], plain[[0, 2]])
    assert (mixed[1] - plain[1]).abs().max() > 1e-2  # the temperature matters at these logits


def test_temperature_one_is_exactly_the_untempered_path():
    g = torch.Generator().manual_seed(2)
    logits = 4 * torch.randn(2, 6, 40, generator=g)
    targets = torch.randint(0, 40, (2, 6), generator=g)
    plain = vocab_parallel_logprobs(logits, targets, group=None)
    assert torch.equal(vocab_parallel_logprobs(logits, targets, group=None, temperature=1.0), plain)
    assert torch.equal(vocab_parallel_entropy(logits, group=None, temperature=1.0),
                       vocab_parallel_entropy(logits, group=None))
    batch = {"rollout_mask": torch.ones(2, 6)}
    assert token_temperature(batch, 1.0) is None  # the loss then takes the untempered path itself
    with pytest.raises(ValueError, match="temperature must be > 0"):
        vocab_parallel_logprobs(logits, targets, group=None, temperature=0.0)


def test_packed_batch_tempers_rollout_tokens_only():
    """One packed micro-batch of demonstrations and rollouts, random logits: the loss's log-probs
    and entropy are tempered exactly where `rollout_mask` is set, plain where `sft_mask` is."""
    samples = mixed_samples(seed=4)
    objective = all_terms_objective()
    assign_advantages(samples, objective.weights_at(0), objective.pg)
    (batch,) = rank_batches(pack_samples(samples, 400), 0, torch.device("cpu"))
    assert batch["sft_mask"].any() and batch["rollout_mask"].any()
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(*batch["targets"].shape, 3000, generator=g)
    temperature = 0.7
    z = logits.double()
    tempered = torch.log_softmax(z / temperature, -1).gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    plain = torch.log_softmax(z, -1).gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    rollout, demo = batch["rollout_mask"] > 0, batch["sft_mask"] > 0
    from megatron_uniapl.algorithm.loss import _logprob_loss_fn

    _, _, out = _logprob_loss_fn(logits, batch, rollout_temperature=temperature)
    got = out["logprobs"].double()
    torch.testing.assert_close(got[rollout], tempered[rollout], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[demo], plain[demo], rtol=0, atol=1e-5)
    # The SFT term ignores the rollout temperature; the policy-gradient terms do not.
    sft_only = objective_for_variant("sft")
    counts = {"sft": int(demo.sum()), "pg_task": int(rollout.sum()), "pg_adv": int(rollout.sum()),
              "kl": int(rollout.sum())}

    def total(objective, t):
        loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, counts, rollout_temperature=t)
        return loss_fn(logits, {**batch, "old_logprobs": got.float(), "ref_logprobs": got.float()})[2]

    assert total(sft_only, temperature)["loss/total"] == total(sft_only, 1.0)["loss/total"]
    assert total(objective, temperature)["loss/total"] != total(objective, 1.0)["loss/total"]


@pytest.fixture(scope="module")
def policy(tiny_tied, megatron_world):
    from parity_utils import megatron_from_hf

    _, model = megatron_from_hf(tiny_tied)
    return model


@pytest.fixture(scope="module")
def hf_model(tiny_tied):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_tied, dtype=torch.float32).eval()


def _hf_response_logprobs(hf_model, sample, temperature: float = 1.0) -> torch.Tensor:
    """log p_T(response token j | prefix) for one sample run alone through transformers."""
    ids = torch.tensor([sample.prompt_ids + sample.response_ids])
    with torch.no_grad():
        logits = hf_model(ids).logits[0]
    p = len(sample.prompt_ids)
    scaled = logits[p - 1 : -1].double() / temperature
    return torch.log_softmax(scaled, -1).gather(-1, ids[0, p:].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_logprobs_match_transformers_per_sample(policy, hf_model, temperature):
    samples = mixed_samples(seed=3)
    packed = pack_samples(samples, 48)
    batches = rank_batches(packed, 0)
    logprobs = compute_logprobs([policy], batches, rollout_temperature=temperature)
    assert len(logprobs) == len(batches) >= 2
    for mb, lp in zip(packed.micro_batches[0], logprobs):
        start = 0
        for i in mb.sample_indices:
            s = samples[i]
            p, r = len(s.prompt_ids), len(s.response_ids)
            got = lp[0, start + p - 1 : start + p - 1 + r]
            # Demonstrations are scored at T = 1 whatever the rollout temperature.
            ref = _hf_response_logprobs(hf_model, s, 1.0 if s.kind == SampleKind.DEMO else temperature)
            mask = (mb.sft_mask if s.kind == SampleKind.DEMO else mb.rollout_mask)[
                0, start + p - 1 : start + p - 1 + r
            ]
            assert mask.tolist() == (s.loss_mask or [1] * r)
            # Tempering follows the loss mask: a masked-out rollout token (read by no term) is
            # scored at T = 1, so only the loss tokens are compared.
            assert (got.double() - ref).abs()[mask > 0].max().item() < 1e-4, i
            start += p + r


def test_sft_variant_loss_is_hf_token_mean_nll(policy, hf_model):
    demos = [s for s in mixed_samples(seed=5, demos=6) if s.kind == SampleKind.DEMO]
    objective = objective_for_variant("sft")
    packed = pack_samples(demos, 40)
    from megatron_uniapl.model.pipeline import run_microbatches

    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, packed.term_counts())
    metrics = run_microbatches([policy], rank_batches(packed, 0), loss_fn=loss_fn, forward_only=True)
    assert len(metrics) >= 2
    nll = torch.cat([-_hf_response_logprobs(hf_model, s) for s in demos])
    expected = nll.mean().item()
    assert sum(m["loss/total"].item() for m in metrics) == pytest.approx(expected, abs=1e-5)
    assert set(k.split("/")[1] for k in metrics[0] if k.startswith("loss/")) == {"sft", "total"}


def _grads_after(policy, samples, objective, budget, multiple=1, with_loss=False):
    weights = objective.weights_at(0)
    assign_advantages(samples, weights, objective.pg)
    packed = pack_samples(samples, budget, pad_to_multiple_of=multiple)
    from megatron_uniapl.model.pipeline import run_microbatches

    policy.zero_grad(set_to_none=True)
    batches = rank_batches(packed, 0)
    metrics = run_microbatches([policy], batches, loss_fn=UniAPLLoss(weights, objective.pg, packed.term_counts()))
    grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    if not with_loss:
        return grads
    padding = sum(mb.input_ids.shape[1] - mb.num_real_tokens for mb in packed.micro_batches[0])
    return grads, sum(m["loss/total"].item() for m in metrics), padding


def test_padding_to_the_layout_multiple_changes_no_loss_and_no_gradient(policy):
    """Sequence parallelism and FP8 pad every micro-batch to a multiple (ModelOptions.token_multiple):
    the padding is its own fully masked segment, so the loss and every gradient stay the same."""
    objective = objective_for_variant("uniapl", lambda_adv=0.3)
    base, loss, none = _grads_after(policy, mixed_samples(seed=6), objective, 64, with_loss=True)
    padded, padded_loss, padding = _grads_after(policy, mixed_samples(seed=6), objective, 64, multiple=32,
                                                with_loss=True)
    assert none == 0 and padding > 0
    assert padded_loss == pytest.approx(loss, rel=1e-6, abs=1e-7)
    for name, g in base.items():
        assert (padded[name] - g).abs().max().item() <= 1e-6 * max(1.0, g.abs().max().item()), name


def test_grpo_variant_gradient_ignores_demonstrations(policy):
    objective = objective_for_variant("grpo")
    base = _grads_after(policy, mixed_samples(seed=1, demo_seed=11), objective, 40)
    other = _grads_after(policy, mixed_samples(seed=1, demo_seed=12, demos=7), objective, 40)
    no_demos = _grads_after(policy, mixed_samples(seed=1, demos=0), objective, 40)
    assert max(g.abs().max().item() for g in base.values()) > 1e-4  # the rollouts do push
    for name, g in base.items():
        for alt in (other, no_demos):
            assert (alt[name] - g).abs().max().item() <= 1e-6 * max(1.0, g.abs().max().item()), name
    # ... while UniAPL on the same batches does see the demonstrations
    uniapl = objective_for_variant("uniapl", lambda_adv=0.0)
    a = _grads_after(policy, mixed_samples(seed=1, demo_seed=11), uniapl, 40)
    b = _grads_after(policy, mixed_samples(seed=1, demo_seed=12, demos=7), uniapl, 40)
    assert max((a[n] - b[n]).abs().max().item() for n in a) > 1e-4


def test_non_finite_loss_skips_the_step(tiny_tied, megatron_world):
    from parity_utils import megatron_from_hf

    _, model = megatron_from_hf(tiny_tied)
    settings = OptimizerSettings(
        optimizer="sgd", lr=0.1, warmup_steps=2, decay_steps=10, decay_style="linear"
    )
    chunks = wrap_ddp([model], settings)
    optimizer, scheduler = build_optimizer(chunks, settings, total_steps=10)
    objective = objective_for_variant("sft")
    demos = [s for s in mixed_samples(seed=2) if s.kind == SampleKind.DEMO]
    packed = pack_samples(demos, 64)
    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, packed.term_counts())

    def nan_loss(logits, batch):
        loss, n, metrics = loss_fn(logits, batch)
        return loss * float("nan"), n, metrics

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_step(chunks, optimizer, rank_batches(packed, 0), nan_loss, scheduler)
    assert result.skipped and result.grad_norm is None and scheduler.num_steps == 0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    # Linear warm-up from 0 (Megatron's convention), then the normal step moves the weights.
    lrs = []
    for _ in range(3):
        result = train_step(chunks, optimizer, rank_batches(packed, 0), loss_fn, scheduler)
        assert not result.skipped and result.grad_norm > 0
        lrs.append(result.learning_rate)
    assert lrs == pytest.approx([0.0, 0.05, 0.1])
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_optimizer_settings_errors():
    with pytest.raises(ValueError, match="optimizer.optimizer is 'lamb'"):
        OptimizerSettings(optimizer="lamb").validate()
    with pytest.raises(ValueError, match=r"optimizer.min_lr must be in \[0, lr"):
        OptimizerSettings(lr=1e-6, min_lr=1e-5).validate()
    with pytest.raises(ValueError, match="decay_steps .5. must exceed warmup_steps .5."):
        OptimizerSettings(warmup_steps=5, decay_steps=5).validate()
    with pytest.raises(ValueError, match="decay_style"):
        OptimizerSettings(decay_style="exp").validate()


def test_sft_step_gradients_equal_transformers_gradients(tiny_tied, megatron_world):
    """The absolute gradient scale through DDP + finalize_model_grads (layout parity cannot see a
    scale applied to every layout alike): grads of the SFT step == HF grads of the token-mean NLL."""
    from parity_utils import hf_named_grads, megatron_from_hf
    from transformers import AutoModelForCausalLM

    arch, model = megatron_from_hf(tiny_tied)
    # No clipping: Megatron's optimizer clips the reduced gradients in place.
    settings = OptimizerSettings(optimizer="sgd", lr=1e-3, clip_grad=0.0)
    chunks = wrap_ddp([model], settings)
    optimizer, scheduler = build_optimizer(chunks, settings, total_steps=10)
    demos = [s for s in mixed_samples(seed=4, demos=5) if s.kind == SampleKind.DEMO]
    packed = pack_samples(demos, 32)
    objective = objective_for_variant("sft")
    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, packed.term_counts())
    train_step(chunks, optimizer, rank_batches(packed, 0), loss_fn, scheduler)
    grads = hf_named_grads(chunks[0].module, arch)

    hf = AutoModelForCausalLM.from_pretrained(tiny_tied, dtype=torch.float32)
    total = sum(len(s.response_ids) for s in demos)
    loss = 0.0
    for s in demos:
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        p = len(s.prompt_ids)
        logp = torch.log_softmax(hf(ids).logits[0, p - 1 : -1], -1)
        loss = loss - logp.gather(-1, ids[0, p:].unsqueeze(-1)).sum() / total
    loss.backward()
    assert len(packed.micro_batches[0]) >= 2
    for name, param in hf.named_parameters():
        ref = param.grad
        diff = (grads[name] - ref).abs().max().item()
        assert diff <= 2e-5 * max(1.0, ref.abs().max().item()), f"{name}: {diff:.3e}"
