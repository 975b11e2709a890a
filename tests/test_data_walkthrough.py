"""docs/data.md's CPU walkthrough, run command by command exactly as written there: prompts from
AlpacaEval's short instructions, a stand-in teacher trained on witnesses, the real
generate_demos through vLLM with the strict filter, the split, two UniAPL steps on the result
and an evaluation of the student on the held-out prompts.

A random model passes no constraint, so an empty teacher output would make every later step
vacuous: the teacher must keep at least MIN_KEPT of the prompts."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_uniapl.data.schemas import read_demonstrations, read_eval_set, read_rl_prompts
from megatron_uniapl.rewards.reward import score

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- cpu-walkthrough:begin -->", "<!-- cpu-walkthrough:end -->"
PROMPTS = 96
HELD_OUT = 16
MIN_KEPT = 60
"""Prompts (of PROMPTS) the stand-in teacher must answer so that the strict filter passes them
(measured: 73, with 145 of 192 samples passing)."""


def walkthrough_commands() -> list[str]:
    """The shell commands of docs/data.md's marked block (continuation lines joined)."""
    doc = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    block = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    lines = block.split("```bash", 1)[1].split("```", 1)[0].splitlines()
    commands, current = [], ""
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            commands.append(" ".join(current.split()))
            current = ""
    return commands


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """Run every command; returns (data dir, runs dir, seconds per command)."""
    base = tmp_path_factory.mktemp("walkthrough")
    env = {**os.environ, "UNIAPL_DATA": str(base / "data"), "UNIAPL_RUNS": str(base / "runs"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    seconds = []
    for command in walkthrough_commands():
        start, cpu = time.perf_counter(), _children_cpu()
        run = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=1200)
        # CPU seconds as well as wall time: on a shared machine the wall time says little.
        seconds.append((" ".join(command.split()[:4]), time.perf_counter() - start, _children_cpu() - cpu))
        assert run.returncode == 0, f"{command}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    print("\n" + "\n".join(f"{wall:7.1f} s wall {cpu:7.1f} s cpu  {c}" for c, wall, cpu in seconds))
    return base / "data", base / "runs", seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_commands_are_the_pipeline():
    tools = [shlex.split(c)[1] if c.startswith("python tools/") else shlex.split(c)[2] for c in walkthrough_commands()]
    assert tools == ["tools/make_prompts.py", "tools/make_prompts.py", "megatron_uniapl.train",
                     "tools/generate_demos.py", "tools/split_data.py", "megatron_uniapl.train", "tools/eval.py"]


def test_prompts_and_teacher_yield(walkthrough):
    data, runs, _ = walkthrough
    made = json.loads((data / "work" / "prompts.jsonl.manifest.json").read_text())
    assert made["counts"]["prompts"] == PROMPTS
    assert made["decontamination"]["dropped"] == 0
    teacher_runs = json.loads((data / "work" / "teacher.jsonl.runs.json").read_text())
    summary = teacher_runs[-1]["summary"]
    assert summary["prompts"] == PROMPTS and teacher_runs[-1]["filter"] == "strict"
    print(f"teacher: {summary['kept']} of {PROMPTS} prompts kept, {summary['passing_samples']} of "
          f"{summary['samples']} samples passing")
    assert summary["kept"] >= MIN_KEPT


def test_split_files_are_what_the_trainer_reads(walkthrough):
    data, _, _ = walkthrough
    result = json.loads((data / "manifest.json").read_text())
    demos = read_demonstrations(data / "demos.jsonl")
    rl = read_rl_prompts(data / "rl_prompts.jsonl")
    held = read_eval_set(data / "eval.jsonl")
    assert len(held) == HELD_OUT
    assert not {d.id for d in demos} & {p.key for p in rl}
    assert all(p.reference_response is not None and score(p, p.reference_response, "strict") == 1.0 for p in rl)
    prompts = {p.key: p for p in read_rl_prompts(data / "work" / "prompts.jsonl")}
    assert all(score(prompts[d.id], d.response, "strict") == 1.0 for d in demos)
    counts = result["counts"]
    assert counts["demos"] == len(demos) and counts["rl_prompts"] == len(rl)
    assert counts["teacher_passing"] == result["teacher"]["runs"][-1]["summary"]["kept"]
    assert result["prompts"]["manifest"]["counts"]["prompts"] == PROMPTS


def test_student_trains_and_is_evaluated(walkthrough):
    _, runs, _ = walkthrough
    last = [json.loads(line) for line in (runs / "tiny_cpu_data" / "metrics.jsonl").open()][-1]
    assert last["step"] == 2 and last["loss/sft"] > 0
    assert 0 <= last["reward/task_mean"] <= 1 and "disc/score_mean" in last  # rollouts scored and compared
    assert (runs / "tiny_cpu_data" / "checkpoints" / "iter_0000002").is_dir()
    results = json.loads((runs / "student_eval" / "results.json").read_text())
    print(f"student after 2 steps: prompt-level strict accuracy {results['prompt_strict']:.3f} on {HELD_OUT} "
          f"held-out prompts")
    assert results["num_prompts"] == HELD_OUT and results["model_format"] == "megatron"
