"""Each loss function against numbers worked out by hand, and its gradient against a reference."""

import math

import pytest
import torch

from megatron_uniapl.config.schedule import MuSchedule
from megatron_uniapl.losses.advantages import group_normalize, shaped_advantages, shaped_signal
from megatron_uniapl.losses.logprobs import entropy_from_logits, logprobs_from_logits
from megatron_uniapl.losses.pg import clipped_surrogate_term, kl_term
from megatron_uniapl.losses.reduction import LossTerm, combine_terms
from megatron_uniapl.losses.sft import sft_term

LN2 = math.log(2.0)


def test_logprobs_hand_values_and_stability():
    # logits (0, 0, ln 2): softmax = (1/4, 1/4, 1/2).
    logits = torch.tensor([[[0.0, 0.0, LN2], [0.0, 0.0, LN2]]])  # [b=1, s=2, V=3]
    targets = torch.tensor([[2, 0]])
    expected = torch.tensor([[-LN2, -2 * LN2]])
    torch.testing.assert_close(logprobs_from_logits(logits, targets), expected)
    # A shift of +1000 overflows a naive exp; the result must not move (integer logits so the
    # shifted values are exact in float32): logits (1000, 1000, 1001) -> 1 - ln(2 + e), -ln(2 + e).
    big = torch.tensor([[[1000.0, 1000.0, 1001.0]] * 2])
    lse = math.log(2.0 + math.e)
    torch.testing.assert_close(logprobs_from_logits(big, targets), torch.tensor([[1.0 - lse, -lse]]))
    # bf16 logits are computed in float32.
    assert logprobs_from_logits(logits.bfloat16(), targets).dtype == torch.float32
    # Entropy: 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2; uniform over 4 = ln 4.
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[1.5 * LN2, 1.5 * LN2]]))
    # (1000, 1000, 1001): p = (1, 1, e) / (2 + e), H = ln(2 + e) - e / (2 + e).
    torch.testing.assert_close(entropy_from_logits(big), torch.full((1, 2), lse - math.e / (2.0 + math.e)))
    torch.testing.assert_close(entropy_from_logits(torch.zeros(4)), torch.tensor(math.log(4.0)))


def test_logprobs_gradient_matches_log_softmax_reference():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 17, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 17, (3, 5))
    weights = torch.randn(3, 5, dtype=torch.float64)
    (logprobs_from_logits(logits, targets) * weights).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref = torch.zeros((), dtype=torch.float64)
    for b in range(3):
        for s in range(5):
            ref = ref + weights[b, s] * torch.log_softmax(logits[b, s].float(), -1)[targets[b, s]]
    ref.backward()
    torch.testing.assert_close(ours, logits.grad, rtol=1e-5, atol=1e-6)

    logits.grad = None
    (entropy_from_logits(logits) * weights).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    p = torch.softmax(logits.float(), -1)
    ((-(p * torch.log(p)).sum(-1)) * weights).sum().backward()
    torch.testing.assert_close(ours, logits.grad, rtol=1e-5, atol=1e-6)


def test_sft_term_sums_masked_nll():
    logprobs = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    term = sft_term(logprobs, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert term.total.item() == pytest.approx(5.0)
    assert term.count.item() == 2
    term.total.backward()
    assert logprobs.grad.tolist() == [0.0, -1.0, -1.0, 0.0]


def test_masked_positions_cannot_leak_nan():
    logprobs = torch.tensor([-1.0, float("nan")], requires_grad=True)
    term = sft_term(logprobs, torch.tensor([1.0, 0.0]))
    term.total.backward()
    assert term.total.item() == 1.0 and logprobs.grad.tolist() == [-1.0, 0.0]


def test_padding_garbage_cannot_poison_ratio_or_kl_gradients():
    # A masked position whose log-ratio would overflow exp(): value and gradient must stay finite.
    lp = torch.tensor([-1.0, 500.0], requires_grad=True)
    old = torch.tensor([-1.0, -500.0])
    mask = torch.tensor([1.0, 0.0])
    adv = torch.tensor([1.0, float("nan")])
    term = clipped_surrogate_term(lp, old, adv, mask, rollout_logprobs=old, tis_cap=2.0)
    kl = kl_term(lp, torch.tensor([-1.0, -900.0]), mask)
    (term.total + kl.total).backward()
    assert term.total.item() == -1.0 and kl.total.item() == 0.0
    assert lp.grad.tolist() == [-1.0, 0.0]


def test_group_normalize_population_sample_and_mean_only():
    rewards = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 3.0]
    groups = [0, 1, 0, 1, 0, 0, 2]  # interleaved on purpose; group 1 constant, group 2 a singleton
    # group 0 = (1, 0, 0, 0): mean 1/4, population var 3/16 -> std sqrt(3)/4 -> A = sqrt(3), -1/sqrt(3).
    s3 = math.sqrt(3.0)
    a = group_normalize(rewards, groups, eps=1e-6)
    assert a[[0, 2, 4, 5]].tolist() == pytest.approx([s3, -1 / s3, -1 / s3, -1 / s3], rel=1e-5)
    assert a[[1, 3, 6]].tolist() == [0.0, 0.0, 0.0]
    # Sample std: var 0.75 / 3 = 0.25 -> std 0.5 -> A = 1.5, -0.5.
    a = group_normalize(rewards, groups, eps=0.0, ddof=1)
    assert a[[0, 2, 4, 5]].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-12)
    # Dr.GRPO: only centered.
    a = group_normalize(rewards, groups, std_normalize=False)
    assert a.tolist() == pytest.approx([0.75, 0.0, -0.25, 0.0, -0.25, -0.25, 0.0], abs=1e-12)
    # Shaping: r + 0.5 d.
    assert shaped_signal([1.0, 0.0], [2.0, -4.0], 0.5).tolist() == [2.0, -2.0]
    # A constant group is 0 also without eps (0/0 would be NaN), even where 0.1*3/3 != 0.1.
    assert group_normalize([0.1, 0.1, 0.1, 1.0, 0.0], [0, 0, 0, 1, 1], eps=0.0).tolist() == [0, 0, 0, 1, -1]
    with pytest.raises(ValueError, match="non-finite"):
        group_normalize([1.0, float("nan")], [0, 0])


def test_shaping_joint_ignores_lambda_in_equal_reward_groups_and_per_term_does_not():
    # Group 0: rewards equal (1, 1), scores (1, -1). Group 1 (three samples): rewards (1, 0, 0),
    # scores (0, 1, -1). eps 0 so the values are exact.
    r, d, g = [1.0, 1.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 1.0, -1.0], [0, 0, 1, 1, 1]
    r2 = math.sqrt(2.0)
    for lam in (0.5, 0.1):
        # joint, group 0: r + lam*d = (1 + lam, 1 - lam) -> (+1, -1) whatever lam is.
        a = shaped_advantages(r, d, g, lam, "joint", eps=0.0)
        assert a[:2].tolist() == pytest.approx([1.0, -1.0], abs=1e-12)
        # per_term, group 0: groupnorm(r) = 0, groupnorm(d) = (+1, -1) -> (lam, -lam).
        a = shaped_advantages(r, d, g, lam, "per_term", eps=0.0)
        assert a[:2].tolist() == pytest.approx([lam, -lam], abs=1e-12)
    # joint, group 1, lam 1: r + d = (1, 1, -1): mean 1/3, centered (2/3, 2/3, -4/3), std 2*sqrt(2)/3.
    a = shaped_advantages(r, d, g, 1.0, "joint", eps=0.0)
    assert a[2:].tolist() == pytest.approx([1 / r2, 1 / r2, -r2], abs=1e-12)
    # per_term, group 1, lam 0.5: groupnorm(r) = (sqrt 2, -1/sqrt 2, -1/sqrt 2),
    # groupnorm(d) = (0, sqrt(3/2), -sqrt(3/2)).
    s = math.sqrt(1.5)
    a = shaped_advantages(r, d, g, 0.5, "per_term", eps=0.0)
    assert a[2:].tolist() == pytest.approx([r2, -1 / r2 + 0.5 * s, -1 / r2 - 0.5 * s], abs=1e-12)
    with pytest.raises(ValueError, match="'joint' or 'per_term', got 'sum'"):
        shaped_advantages(r, d, g, 0.5, "sum")


# Five tokens: (rho, A) = (1.5, +1), (1.5, -1), (0.5, -2), (0.5, +2), (1.0, +3 masked out).
LP = [math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5), 0.0]
ADV = [1.0, -1.0, -2.0, 2.0, 3.0]
MASK = [1.0, 1.0, 1.0, 1.0, 0.0]


def _surrogate(**kwargs):
    logprobs = torch.tensor(LP, dtype=torch.float64, requires_grad=True)
    term = clipped_surrogate_term(
        logprobs,
        torch.zeros(5, dtype=torch.float64),
        torch.tensor(ADV, dtype=torch.float64),
        torch.tensor(MASK),
        **kwargs,
    )
    term.total.backward()
    return term, logprobs.grad.tolist()


def test_clipped_surrogate_hand_values():
    term, grad = _surrogate(clip_low=0.2, clip_high=0.2)
    # -min(1.5, 1.2) = -1.2 ; -min(-1.5, -1.2) = 1.5 ; -min(-1.0, -1.6) = 1.6 ; -min(1.0, 1.6) = -1.0
    assert term.total.item() == pytest.approx(0.9)
    assert term.count.item() == 4
    # d/dlp of -rho*A is -rho*A on unclipped tokens, 0 on clipped ones.
    assert grad == pytest.approx([0.0, 1.5, 0.0, -1.0, 0.0])
    m = {k: v.item() for k, v in term.metrics.items()}
    assert (m["clip_frac"], m["clip_frac_low"], m["clip_frac_high"]) == (2.0, 1.0, 1.0)
    assert m["ratio"] == pytest.approx(4.0)
    # k3(rho) = rho - 1 - ln rho: 2 * (0.5 - ln 1.5) + 2 * (-0.5 + ln 2)
    assert m["approx_kl"] == pytest.approx(2 * (0.5 - math.log(1.5)) + 2 * (-0.5 + LN2))


def test_clip_high_separate_from_clip_low():
    term, grad = _surrogate(clip_low=0.2, clip_high=0.6)  # 1.5 < 1.6: token 0 no longer clipped
    assert term.total.item() == pytest.approx(-1.5 + 1.5 + 1.6 - 1.0)
    assert grad == pytest.approx([-1.5, 1.5, 0.0, -1.0, 0.0])


def test_tis_weights_are_truncated_and_detached():
    # old - rollout = (-ln 4, ln 3, 0, -ln 2, 0) -> w = (0.25, 3 -> cap 2, 1, 0.5, 1)
    rollout = torch.tensor(
        [math.log(4.0), -math.log(3.0), 0.0, LN2, 0.0], dtype=torch.float64, requires_grad=True
    )
    term, grad = _surrogate(clip_low=0.2, clip_high=0.2, rollout_logprobs=rollout, tis_cap=2.0)
    assert term.total.item() == pytest.approx(-1.2 * 0.25 + 1.5 * 2 + 1.6 * 1 - 1.0 * 0.5)
    assert grad == pytest.approx([0.0, 3.0, 0.0, -0.5, 0.0])
    assert term.metrics["tis_weight"].item() == pytest.approx(3.75)
    assert term.metrics["tis_capped_frac"].item() == 1.0
    assert rollout.grad is None  # the weight reweights only; no gradient reaches the engine's log-probs
    with pytest.raises(ValueError, match="rollout_logprobs"):
        _surrogate(tis_cap=2.0)


def test_surrogate_gradient_matches_per_token_loop():
    torch.manual_seed(1)
    n = 40
    lp = (torch.randn(n, dtype=torch.float64) * 0.3 - 1.0).requires_grad_()
    old = lp.detach() + torch.randn(n, dtype=torch.float64) * 0.3
    roll = old + torch.randn(n, dtype=torch.float64) * 0.5
    adv = torch.randn(n, dtype=torch.float64)
    mask = (torch.rand(n) > 0.3).float()
    term = clipped_surrogate_term(lp, old, adv, mask, 0.1, 0.3, roll, 1.5)
    (g_ours,) = torch.autograd.grad(term.total, lp)
    # Independent reference: an explicit per-token branch on Python floats, gradient by hand.
    g_ref, total_ref = [0.0] * n, 0.0
    for i in range(n):
        if not mask[i]:
            continue
        rho = math.exp(lp[i].item() - old[i].item())
        a = adv[i].item()
        w = min(math.exp(old[i].item() - roll[i].item()), 1.5)
        clipped = min(max(rho, 0.9), 1.3)
        if rho * a <= clipped * a:
            total_ref += -w * rho * a
            g_ref[i] = -w * rho * a
        else:
            total_ref += -w * clipped * a
    assert term.total.item() == pytest.approx(total_ref, rel=1e-12)
    assert g_ours.tolist() == pytest.approx(g_ref, abs=1e-12)


def test_kl_estimators_hand_values_and_gradients():
    # log pi_ref / pi = ln 2
    for est, value, grad in (("k1", -LN2, 1.0), ("k2", 0.5 * LN2**2, -LN2), ("k3", 1.0 - LN2, -1.0)):
        lp = torch.tensor([0.0, 5.0], dtype=torch.float64, requires_grad=True)
        term = kl_term(lp, torch.tensor([LN2, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0]), est)
        term.total.backward()
        assert term.total.item() == pytest.approx(value), est
        assert lp.grad.tolist() == pytest.approx([grad, 0.0]), est
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_term(lp, lp.detach(), torch.ones(2), "k4")


def test_combine_terms_token_means_and_empty_terms():
    x = torch.tensor(1.0, requires_grad=True)
    terms = {
        "sft": LossTerm(6.0 * x, torch.tensor(3)),
        "pg_task": LossTerm(2.0 * x, torch.tensor(2), {"clip_frac": torch.tensor(1.0)}),
        "pg_adv": LossTerm(x * 0.0, torch.tensor(0)),  # no rollout tokens anywhere: must add 0
    }
    loss, metrics = combine_terms(
        terms, {"sft": 0.5, "pg_task": 0.5, "pg_adv": 0.1}, {"sft": 12, "pg_task": 4, "pg_adv": 0}
    )
    assert loss.item() == pytest.approx(0.5 * 6 / 12 + 0.5 * 2 / 4)
    loss.backward()
    assert x.grad.item() == pytest.approx(0.5)
    assert metrics["loss/sft"].item() == 0.5 and metrics["pg_task/clip_frac"].item() == 0.25
    assert metrics["loss/pg_adv"].item() == 0.0
    with pytest.raises(KeyError, match="no weight"):
        combine_terms(terms, {"sft": 1.0}, {"sft": 1, "pg_task": 1, "pg_adv": 1})
    with pytest.raises(ValueError, match="global count of 0"):
        combine_terms({"sft": terms["sft"]}, {"sft": 1.0}, {"sft": 0})


def test_mu_schedule_formula():
    s = MuSchedule(kind="chord", start=0.0, peak=0.8, end=0.0, warmup_steps=10, decay_steps=20)
    assert [s.at(t) for t in (0, 5, 10, 20, 30, 100)] == pytest.approx([0.0, 0.4, 0.8, 0.4, 0.0, 0.0])
    s.decay = "linear"
    assert s.at(15) == pytest.approx(0.6)
    assert MuSchedule(value=0.3).at(1000) == 0.3
    with pytest.raises(ValueError, match=r"objective.mu.peak must be in \[0, 1\]"):
        MuSchedule(kind="chord", peak=1.5).validate("objective.mu")


def test_clip_fraction_is_a_share_of_the_global_rollout_tokens_summed_over_micro_batches():
    # Four rollout tokens of the step in two micro-batches (plus one padding position):
    #   mb 1: rho 1.5, A +1 (upper clip active); rho 1.5, A -1 (unclipped branch is the min)
    #   mb 2: rho 0.5, A -1 (lower clip active); rho 1.0, A +1; padding rho 0.5, A -1 (ignored)
    ln = math.log
    micro = [
        ([ln(1.5), ln(1.5)], [1.0, -1.0], [1, 1]),
        ([ln(0.5), 0.0, ln(0.5)], [-1.0, 1.0, -1.0], [1, 1, 0]),
    ]
    summed: dict[str, float] = {}
    for lp, adv, mask in micro:
        lp = torch.tensor([lp], dtype=torch.float64)
        term = clipped_surrogate_term(lp, torch.zeros_like(lp), torch.tensor([adv], dtype=torch.float64),
                                      torch.tensor([mask]), clip_low=0.2, clip_high=0.2)
        _, metrics = combine_terms({"pg_task": term}, {"pg_task": 1.0}, {"pg_task": 4})
        for k, v in metrics.items():
            summed[k] = summed.get(k, 0.0) + v.item()
    assert summed["pg_task/clip_frac"] == 0.5
    assert (summed["pg_task/clip_frac_low"], summed["pg_task/clip_frac_high"]) == (0.25, 0.25)
