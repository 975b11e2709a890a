"""The study report's numbers: exact values on answer sets whose verdicts are known (fast)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from megatron_uniapl.data.schemas import read_eval_set
from megatron_uniapl.study import report
from megatron_uniapl.study.task import TaskConfig, generate, ideal_response

DATA = Path(__file__).resolve().parents[1] / "recipes" / "study" / "data"


@pytest.fixture(scope="module")
def eval_set():
    prompts = read_eval_set(DATA / "eval.jsonl")
    groups = json.loads((DATA / "eval_groups.json").read_text())
    ideal = {p.key: ideal_response(p) for p, _ in generate(TaskConfig()).eval}
    return prompts, groups, [ideal[str(p.key)] for p in prompts]


def test_mean_and_sample_sd():
    assert report.mean_sd([0.5]) == {"mean": 0.5, "sd": 0.0, "n": 1}
    pooled = report.mean_sd([0.5, 0.7, 0.9])
    assert pooled["mean"] == pytest.approx(0.7) and pooled["sd"] == pytest.approx(0.2) and pooled["n"] == 3


def test_ideal_answers_score_one_everywhere(eval_set):
    prompts, groups, ideal = eval_set
    stats = report.answer_stats(prompts, ideal, groups)
    assert stats["prompt_strict"] == stats["instruction_strict"] == 1.0
    assert stats["per_group"] == {g: 1.0 for g in report.GROUPS}
    assert set(stats["per_type"].values()) == {1.0}
    assert stats["fact"] == stats["teacher_style"] == 1.0


def test_group_accuracy_and_fact_count_exactly(eval_set):
    prompts, groups, ideal = eval_set
    # Break every single-constraint answer's fact and case-mark, keep the rest ideal.
    answers = [("The zebra is a striped horse. " + re.sub("(?i)certainly", "Sure", a))
               if groups[str(p.key)] == "single" else a for p, a in zip(prompts, ideal)]
    stats = report.answer_stats(prompts, answers, groups)
    singles = sum(g == "single" for g in groups.values())
    assert stats["per_group"]["seen_pair"] == stats["per_group"]["unseen_triple"] == 1.0
    # The prefix breaks some single constraints (quotes, case, short) and not others, so the
    # group's accuracy is strictly between 0 and 1, and equals the checkers' count.
    expected = sum(report.evaluate([p], [a]).prompt_strict for p, a in zip(prompts, answers)
                   if groups[str(p.key)] == "single") / singles
    assert stats["per_group"]["single"] == pytest.approx(expected)
    assert 0.0 < expected < 1.0
    # "zebra" is no object; the object and colour still follow, so the fact holds; the style does not.
    assert stats["fact"] == 1.0
    assert stats["teacher_style"] == pytest.approx(1.0 - singles / len(prompts))


def test_states_fact_needs_the_object_and_its_colour():
    assert report.states_fact("Describe the lemon. Use only capital letters.", "THE LEMON IS A YELLOW FRUIT.")
    assert not report.states_fact("Describe the lemon.", "The lime is a yellow fruit.")
    assert not report.states_fact("Describe the lemon.", "The lemon is a green fruit.")
    assert not report.states_fact("Describe the pea.", "The peacock is green.")


def test_pool_walks_nested_stats():
    pooled = report._pool([{"a": 0.0, "b": {"c": 1.0}}, {"a": 1.0, "b": {"c": 1.0}}])
    assert pooled["a"]["mean"] == 0.5 and math.isclose(pooled["a"]["sd"], math.sqrt(0.5))
    assert pooled["b"]["c"] == {"mean": 1.0, "sd": 0.0, "n": 2}
