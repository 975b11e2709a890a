"""tools/split_data.py on a prompt file and teacher outputs written in generate_demos' format:
disjoint sets by default, the failed-reference policies with exact counts, the filter applied
again, a manifest with hashes and the teacher's runs, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_uniapl.teacher.generate import attempts_path
from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.schemas import read_demonstrations, read_eval_set, read_rl_prompts
from megatron_uniapl.data import manifest
from megatron_uniapl.dataprep.split import SplitConfig, main, split

QUOTE = "startend:quotation"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data(tmp_path):
    """20 quotation prompts; the teacher kept a passing answer for p00-p11, wrote a failing
    one for p12-p15 (kept without a filter), rejected p16-p17 (failing text in the attempt
    log) and produced nothing usable for p18-p19."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"key": f"p{i:02d}", "prompt": f"Say something about the number {i}.", "instruction_id_list": [QUOTE],
         "kwargs": [{}]} for i in range(20)])
    teacher = tmp_path / "teacher.jsonl"
    write_jsonl(teacher, [{"prompt": "-", "response": f'"number {i}"', "id": f"p{i:02d}"} for i in range(12)]
                + [{"prompt": "-", "response": f"number {i}", "id": f"p{i:02d}"} for i in range(12, 16)])
    write_jsonl(attempts_path(teacher),
                [{"id": f"p{i:02d}", "samples": 1, "passing": 1, "truncated": 0, "kept": True} for i in range(16)]
                + [{"id": f"p{i:02d}", "samples": 2, "passing": 0, "truncated": 0, "kept": False,
                    "rejected_response": f"plain {i}"} for i in (16, 17)]
                + [{"id": f"p{i:02d}", "samples": 2, "passing": 0, "truncated": 2, "kept": False,
                    "rejected_response": None} for i in (18, 19)])
    manifest.append_run_record(teacher, {"teacher": "tiny", "filter": None})
    return prompts, teacher


def run(data, tmp_path, **kw) -> tuple[dict, Path]:
    prompts, teacher = data
    out = tmp_path / "out"
    return split(SplitConfig(prompts, teacher, out, **kw)), out


def test_default_split_is_disjoint_and_drops_failed_references(data, tmp_path):
    result, out = run(data, tmp_path)
    demos, rl = read_demonstrations(out / "demos.jsonl"), read_rl_prompts(out / "rl_prompts.jsonl")
    assert not {d.id for d in demos} & {p.key for p in rl}
    assert result["counts"] == {"prompts": 20, "unattempted": 0, "teacher_passing": 12, "demos": len(demos),
                                "rl_prompts": len(rl), "eval": 0,
                                "demo_dropped_no_passing_response": 10 - len(demos),
                                "rl_with_passing_reference": len(rl),
                                "rl_dropped_failed_reference": 10 - len(rl)}
    assert len(demos) + len(rl) == 12  # every passing answer is used once
    assert all(p.reference_response == f'"number {int(p.key[1:])}"' for p in rl)
    assert result["split"]["failed_reference"] == "drop" and result["teacher"]["runs"] == [{"teacher": "tiny",
                                                                                           "filter": None}]
    assert result["outputs"]["demos"] == manifest.file_entry(out / "demos.jsonl", len(demos))
    assert result["constraints_per_type"]["rl_prompts"] == {QUOTE: len(rl)}
    assert not (out / "eval.jsonl").exists()


@pytest.mark.parametrize("policy, with_failing, without", [("keep-without", 0, 8), ("keep-failing", 6, 2)])
def test_failed_reference_policies(data, tmp_path, policy, with_failing, without):
    result, out = run(data, tmp_path, both=True, failed_reference=policy)
    rl = {p.key: p for p in read_rl_prompts(out / "rl_prompts.jsonl")}
    assert len(rl) == 20 and result["counts"]["rl_with_passing_reference"] == 12
    assert result["counts"].get("rl_with_failing_reference", 0) == with_failing
    assert result["counts"]["rl_without_reference"] == without
    assert rl["p19"].reference_response is None  # nothing usable was generated
    expected_p16 = "plain 16" if policy == "keep-failing" else None
    assert rl["p16"].reference_response == expected_p16
    assert len(read_demonstrations(out / "demos.jsonl")) == 12  # --both: every passing prompt


def test_held_out_eval_and_seeded_assignment(data, tmp_path):
    result, out = run(data, tmp_path, eval_count=5, seed=3)
    held = read_eval_set(out / "eval.jsonl")
    training = {d.id for d in read_demonstrations(out / "demos.jsonl")} | {
        p.key for p in read_rl_prompts(out / "rl_prompts.jsonl")}
    assert len(held) == 5 and not {p.key for p in held} & training
    again, _ = run(data, tmp_path, eval_count=5, seed=3)
    assert again == result
    other, _ = run(data, tmp_path, eval_count=5, seed=4)
    assert other["outputs"]["eval"]["sha256"] != result["outputs"]["eval"]["sha256"]


def test_filter_is_applied_again(data, tmp_path):
    strict, _ = run(data, tmp_path)
    none, _ = run(data, tmp_path, filter="none", both=True)
    assert strict["counts"]["teacher_passing"] == 12
    assert none["counts"]["teacher_passing"] == 18  # every non-blank response, failing or not


def test_unattempted_prompts_are_refused_unless_allowed(data, tmp_path):
    prompts, teacher = data
    lines = attempts_path(teacher).read_text().splitlines(keepends=True)
    attempts_path(teacher).write_text("".join(lines[:-2]))  # p18, p19 never attempted
    with pytest.raises(DataError, match="2 of 20 prompts have no teacher attempt .*'p18'"):
        run(data, tmp_path)
    result, _ = run(data, tmp_path, allow_unattempted=True)
    assert result["counts"]["unattempted"] == 2


def test_cli(data, tmp_path, capsys):
    prompts, teacher = data
    assert main(["--prompts", str(prompts), "--teacher-out", str(teacher), "--out-dir", str(tmp_path / "o"),
                 "--eval-count", "2"]) == 0
    assert capsys.readouterr().out.startswith("prompts=20 unattempted=0 teacher_passing=12 ")
    assert main(["--prompts", str(tmp_path / "missing.jsonl"), "--teacher-out", str(teacher),
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().out.strip() == f"split_data: {tmp_path / 'missing.jsonl'}: no such file"
