"""End to end: tools/analyze on a tiny random Qwen3 writes readable PNGs and a JSON report whose
numbers match an independent computation (prefix-by-prefix log-probs, quantile-form W1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_uniapl.eval.analyze import main
from megatron_uniapl.model.tiny import create_tiny_qwen3

PROMPTS = ["Name a prime number.", "Say hello in French.", "Describe the sea in one sentence."]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _w1_by_quantiles(a, b):
    """W1 = integral over u in (0, 1) of |Q_a(u) - Q_b(u)|, quantile functions piecewise constant
    between the breakpoints k/n and k/m."""
    a, b = np.sort(a), np.sort(b)
    cuts = np.unique(np.concatenate([np.arange(a.size + 1) / a.size, np.arange(b.size + 1) / b.size]))
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        mid = (lo + hi) / 2
        total += (hi - lo) * abs(a[int(mid * a.size)] - b[int(mid * b.size)])
    return total


def _ks_by_brute_force(a, b):
    points = np.concatenate([a, b])
    return max(abs(np.mean(a <= x) - np.mean(b <= x)) for x in points)


def _logprobs_prefix_by_prefix(model, tokenizer, prompt, response):
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = []
    for token in tokenizer(response, add_special_tokens=False)["input_ids"]:
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        out.append(float(last[token] - torch.logsumexp(last, dim=0)))
        ids = ids + [token]
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return create_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"), seed=0)


def test_analyze_end_to_end(tmp_path, tiny_model):
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expert = _write(tmp_path / "expert.jsonl", [
        {"prompt": PROMPTS[0], "response": "Seven is prime."},
        {"prompt": PROMPTS[1], "response": "Bonjour tout le monde !"},
        {"prompt": "A prompt the policy never saw.", "response": "Ignored."},
    ])
    policy = _write(tmp_path / "policy.jsonl", [
        {"prompt": PROMPTS[0], "response": "2"},
        {"prompt": PROMPTS[0], "response": "Eleven, because it has no divisors but 1 and itself."},
        {"messages": [{"role": "user", "content": PROMPTS[1]}], "response": "Salut."},
        {"prompt": PROMPTS[2], "response": "Blue and endless."},  # no expert answer: ignored
    ])
    out = tmp_path / "analysis"
    assert main(["--policy", str(policy), "--expert", str(expert), "--out", str(out),
                 "--model", str(tiny_model), "--bins", "10"]) == 0

    for name in ("lengths.png", "logprobs.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == (600, 400)
            image.load()
    report = json.loads((out / "report.json").read_text())
    assert (report["num_prompts"], report["num_policy_responses"],
            report["num_expert_responses"]) == (2, 3, 2)

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    sides = {"policy": [(PROMPTS[0], "2"), (PROMPTS[0], "Eleven, because it has no divisors but 1 "
                                                       "and itself."), (PROMPTS[1], "Salut.")],
             "expert": [(PROMPTS[0], "Seven is prime."), (PROMPTS[1], "Bonjour tout le monde !")]}
    per_response = {side: [_logprobs_prefix_by_prefix(model, tokenizer, p, r) for p, r in pairs]
                    for side, pairs in sides.items()}
    lengths = {side: np.array([len(lp) for lp in per], float) for side, per in per_response.items()}
    tokens = {side: np.concatenate(per) for side, per in per_response.items()}
    means = {side: np.array([np.mean(lp) for lp in per]) for side, per in per_response.items()}

    assert report["length"]["unit"] == "tokens"
    assert report["length"]["policy"]["mean"] == pytest.approx(lengths["policy"].mean())
    assert report["length"]["expert"]["max"] == lengths["expert"].max()
    assert report["length"]["wasserstein_1"] == pytest.approx(
        _w1_by_quantiles(lengths["policy"], lengths["expert"]), abs=1e-9)
    assert report["length"]["ks"] == pytest.approx(
        _ks_by_brute_force(lengths["policy"], lengths["expert"]), abs=1e-12)
    logprob = report["logprob"]
    assert logprob["policy"]["count"] == tokens["policy"].size
    assert logprob["policy"]["mean"] == pytest.approx(tokens["policy"].mean(), abs=1e-5)
    assert logprob["expert"]["min"] == pytest.approx(tokens["expert"].min(), abs=1e-5)
    assert logprob["wasserstein_1"] == pytest.approx(
        _w1_by_quantiles(tokens["policy"], tokens["expert"]), abs=1e-5)
    assert logprob["ks"] == pytest.approx(_ks_by_brute_force(tokens["policy"], tokens["expert"]))
    assert logprob["per_response_mean"]["wasserstein_1"] == pytest.approx(
        _w1_by_quantiles(means["policy"], means["expert"]), abs=1e-5)
    # A random model over a 152k vocabulary: log-probs near -log(151936) = -11.9.
    assert -20 < logprob["policy"]["mean"] < -5


def test_without_a_model_lengths_are_words_and_no_overlap_is_an_error(tmp_path, capsys):
    expert = _write(tmp_path / "e.jsonl", [{"prompt": "q", "response": "one two three"}])
    policy = _write(tmp_path / "p.jsonl", [{"prompt": "q", "response": "one"},
                                          {"prompt": "q", "response": "one two"}])
    assert main(["--policy", str(policy), "--expert", str(expert), "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["length"]["unit"] == "words" and "logprob" not in report
    # policy {1, 2} vs expert {3}: mass 1/2 moves 2 and 1/2 moves 1.
    assert report["length"]["wasserstein_1"] == pytest.approx(1.5)
    assert report["length"]["ks"] == 1.0
    other = _write(tmp_path / "x.jsonl", [{"prompt": "other", "response": "r"}])
    assert main(["--policy", str(other), "--expert", str(expert), "--out", str(tmp_path / "o2")]) == 2
    assert "no prompt in common" in capsys.readouterr().out
