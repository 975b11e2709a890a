"""The study driver end to end, as a user runs it (`tools/study.py`), at a few steps per method.

Checks the mechanics, not the ranking: the warm start gives RL a signal (groups whose rewards
differ), SFT's loss falls on the teacher's demonstrations, UniAPL trains all three terms, every
cell is evaluated and reported, and a second call resumes without training anything again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_uniapl.data.schemas import read_demonstrations, read_eval_set
from megatron_uniapl.eval.ifeval import evaluate
from megatron_uniapl.metrics.sinks import read_record

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sft", "grpo", "uniapl")
STEPS = 4


def _study(out: Path, runs: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "tools/study.py", *(f"recipes/study/{m}.yaml" for m in METHODS), "--seeds", "1",
               "--out", str(out), "--runs", str(runs), "--set", f"train.steps={STEPS}",
               # A short warm start: enough for rewards that differ within groups, not for a good model.
               "--warm-set", "train.steps=40"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    out, runs = tmp / "results", tmp / "runs"
    proc = _study(out, runs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, runs


def _rows(out: Path, method: str) -> list[dict]:
    return read_record(out / method / "seed0" / "train")


def test_rl_has_signal_from_the_warm_start(study):
    out, _ = study
    for method in ("grpo", "uniapl"):
        rows = _rows(out, method)
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
        # Some group in some step has rewards that differ, i.e. a non-zero task advantage.
        assert min(r["reward/equal_groups_frac"] for r in rows) < 1.0, method
        assert 0.0 < sum(r["reward/task_mean"] for r in rows) / STEPS < 1.0, method


def test_sft_loss_falls_on_the_teacher_demonstrations(study):
    out, _ = study
    losses = [r["loss/sft"] for r in _rows(out, "sft")]
    assert losses[-1] < losses[0], losses


def test_uniapl_trains_every_term(study):
    out, _ = study
    row = _rows(out, "uniapl")[-1]
    assert row["loss/sft"] > 0.0
    assert "disc/equal_groups_frac" in row and "reward/task_mean" in row


def test_every_cell_is_evaluated_and_reported(study):
    out, _ = study
    report = json.loads((out / "results.json").read_text())
    assert list(report["rows"]) == ["teacher", "base", *METHODS]
    # The teacher row is the checkers' verdict on the shipped teacher answers, exactly.
    data = ROOT / "recipes" / "study" / "data"
    prompts = read_eval_set(data / "eval.jsonl")
    teacher = {d.id: d.response for d in read_demonstrations(data / "teacher_eval.jsonl")}
    expected = evaluate(prompts, [teacher[str(p.key)] for p in prompts]).prompt_strict
    assert report["rows"]["teacher"]["greedy"]["prompt_strict"]["mean"] == expected
    for method in ("base", *METHODS):
        for mode in ("greedy", "sampled"):
            results = json.loads((out / method / "seed0" / "eval" / mode / "results.json").read_text())
            assert results["num_prompts"] == 120
            assert report["rows"][method][mode]["prompt_strict"]["mean"] == pytest.approx(results["prompt_strict"])
    assert set(report["curves"]) == set(METHODS)
    for name in ("reward_curves.png", "distributions.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| uniapl | 1 |" in (out / "results.md").read_text()


def test_a_second_call_resumes_without_training_again(study):
    out, runs = study
    logs = {m: (out / m / "seed0" / "train.log").read_text() for m in METHODS}
    before = (out / "results.json").read_text()
    proc = _study(out, runs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "done already" in proc.stderr
    assert {m: (out / m / "seed0" / "train.log").read_text() for m in METHODS} == logs
    assert (out / "results.json").read_text() == before
