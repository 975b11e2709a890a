"""The Slurm scripts without a cluster: the exact srun/torchrun/sbatch commands for given Slurm
variables (DRY_RUN=1), the problems they report, and the batch shell's stop and requeue logic.

Runs bash with fake SLURM_* variables. `scontrol` (and, for the stop logic, `srun`) are replaced
by small scripts: the test doubles stand in for Slurm, never for the batch scripts under test.
tests/test_slurm_cluster.py runs the same scripts under a real Slurm."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_SCONTROL = r"""#!/bin/bash
# Test double of scontrol: `show hostnames LIST` for lists like node[003-005] or a,b; `show job`
# prints the requeue flag; `requeue ID` is recorded in $FAKE_DIR/requeued.
case "$1 $2" in
    "show hostnames")
        list="$3"
        if [[ "$list" =~ ^([a-z]+)\[([0-9]+)-([0-9]+)\]$ ]]; then
            width=${#BASH_REMATCH[2]}
            for ((i = 10#${BASH_REMATCH[2]}; i <= 10#${BASH_REMATCH[3]}; i++)); do
                printf "%s%0${width}d\n" "${BASH_REMATCH[1]}" "$i"
            done
        else
            tr ',' '\n' <<< "$list"
        fi ;;
    "show job") echo "JobId=$3 Requeue=${FAKE_REQUEUE_FLAG:-1} Restarts=0" ;;
    "requeue "*) echo "$2" >> "$FAKE_DIR/requeued" ;;
    *) exit 1 ;;
esac
"""

# Test double of srun for the stop logic: a "trainer" that saves once the stop file exists and
# ends the way megatron_uniapl.launcher reports a stop (tests/test_launcher.py checks that part),
# or ends normally after FAKE_RUN_S seconds.
FAKE_SRUN = r"""#!/bin/bash
touch "$FAKE_DIR/started"
end=$((SECONDS + ${FAKE_RUN_S:-20}))
while ((SECONDS < end)); do
    if [[ -e "$UNIAPL_STOP_FILE" ]]; then
        echo "fake trainer: saved, stopping"
        touch "$UNIAPL_STOP_FILE.stopped"
        exit 0
    fi
    sleep 0.05
done
echo "fake trainer: all steps done"
"""

JOB = {"SLURM_JOB_ID": 1, "SLURM_JOB_NODELIST": "g1", "SLURM_JOB_NUM_NODES": 1, "SLURM_GPUS_PER_NODE": 8}


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "DRY_RUN": "1",
        "UNIAPL_REPO": str(ROOT), "UNIAPL_VENV": sys.prefix, "UNIAPL_SKIP_CHECKS": "1",
        "PYTHONPATH": str(ROOT), "FAKE_DIR": str(tmp_path),
    }


def run(script: str, args: list[str], env: dict, **slurm) -> subprocess.CompletedProcess:
    full = dict(env, **{k: str(v) for k, v in slurm.items()})
    return subprocess.run(["bash", str(ROOT / "slurm" / script), *args], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def launched(result: subprocess.CompletedProcess) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[len("LAUNCH:"):]) for line in result.stdout.splitlines() if line.startswith("LAUNCH:")]


def launch_env(result: subprocess.CompletedProcess) -> dict[str, str]:
    [line] = [line for line in result.stdout.splitlines() if line.startswith("ENV:")]
    return dict(item.split("=", 1) for item in shlex.split(line[len("ENV:"):]))


def flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def torchrun_part(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(srun args, torchrun args, program args) of a launch command (srun ... PYTHON -m launcher ...)."""
    t = argv.index("megatron_uniapl.launcher")
    m = argv.index("megatron_uniapl.train")
    return argv[: t - 2], argv[t + 1: m - 1], argv[m + 1:]


def test_4b_one_node(env):
    [cmd] = launched(run("qwen3_4b_uniapl.sh", [], env, SLURM_JOB_ID=4242, SLURM_JOB_NODELIST="gpu017",
                         SLURM_JOB_NUM_NODES=1, SLURM_GPUS_ON_NODE=8, SLURM_JOB_CPUS_PER_NODE=96))
    srun, torchrun, program = torchrun_part(cmd)
    assert srun[0] == "srun" and flag(srun, "--nodes") == "1" and flag(srun, "--ntasks-per-node") == "1"
    assert flag(srun, "--chdir") == str(ROOT) and flag(srun, "--export") == "ALL"
    assert flag(srun, "--cpus-per-task") == "96"  # the node's CPUs, not srun's default of one
    assert cmd[len(srun)] == f"{sys.prefix}/bin/python"
    assert flag(torchrun, "--nnodes") == "1" and flag(torchrun, "--nproc-per-node") == "8"
    assert flag(torchrun, "--rdzv-backend") == "static"
    assert flag(torchrun, "--master-addr") == "gpu017" and flag(torchrun, "--master-port") == "24242"  # 20000 + 4242 % 20000
    assert program == ["--config", "recipes/qwen3_4b.yaml"]


def test_32b_four_nodes_with_recipe_and_overrides(env):
    args = ["recipes/variants/qwen3_4b_a_grpo.yaml", "optimizer.lr=1e-6", "optimizer.betas=[0.9, 0.95]"]
    [cmd] = launched(run("qwen3_32b_uniapl.sh", args, env, SLURM_JOB_ID=123456, SLURM_JOB_NODELIST="node[003-006]",
                         SLURM_JOB_NUM_NODES=4, SLURM_GPUS_PER_NODE="h100:8", SLURM_JOB_CPUS_PER_NODE="72(x3),36"))
    srun, torchrun, program = torchrun_part(cmd)
    assert flag(srun, "--nodes") == "4" and flag(srun, "--cpus-per-task") == "36"  # the smallest node's share
    assert flag(torchrun, "--nnodes") == "4" and flag(torchrun, "--nproc-per-node") == "8"
    assert flag(torchrun, "--master-addr") == "node003" and flag(torchrun, "--master-port") == "23456"
    assert program == ["--config", *args]  # the override with spaces stays one argument


def test_requested_gpus_win_over_the_whole_node(env):
    """--exclusive gives the job every GPU of the node (SLURM_GPUS_ON_NODE=8); --gpus-per-node=1 asked for one."""
    [cmd] = launched(run("train.sh", ["recipes/qwen3_8b.yaml"], env,
                         **dict(JOB, SLURM_GPUS_PER_NODE=1, SLURM_GPUS_ON_NODE=8)))
    assert flag(torchrun_part(cmd)[1], "--nproc-per-node") == "1"


def test_cpu_cluster_without_gres(env):
    slurm = dict(JOB, SLURM_GPUS_PER_NODE=0)
    result = run("train.sh", ["recipes/qwen3_8b.yaml"], env, **slurm)
    assert result.returncode != 0 and "no GPUs in this job" in result.stderr and "UNIAPL_GPUS_PER_NODE" in result.stderr
    [cmd] = launched(run("train.sh", ["recipes/qwen3_8b.yaml"], env, **slurm, UNIAPL_GPUS_PER_NODE=2))
    assert flag(torchrun_part(cmd)[1], "--nproc-per-node") == "2"


def test_default_recipes_and_overrides_only(env):
    slurm = dict(SLURM_JOB_ID=7, SLURM_JOB_NODELIST="a1,a2", SLURM_JOB_NUM_NODES=2, UNIAPL_GPUS_PER_NODE=4,
                 UNIAPL_RDZV_PORT=29555, UNIAPL_RDZV_HOST="10.0.0.1")
    [cmd] = launched(run("qwen3_0p6b_uniapl.sh", ["train.steps=3"], env, **slurm))
    srun, torchrun, program = torchrun_part(cmd)
    assert program == ["--config", "recipes/qwen3_0p6b.yaml", "train.steps=3"]
    assert flag(torchrun, "--master-addr") == "10.0.0.1" and flag(torchrun, "--master-port") == "29555"
    assert flag(torchrun, "--nproc-per-node") == "4"
    [cmd] = launched(run("qwen3_32b_uniapl.sh", [], env, **slurm))
    assert torchrun_part(cmd)[2] == ["--config", "recipes/qwen3_32b.yaml"]


def test_launch_environment(env):
    result = run("train.sh", ["recipes/qwen3_8b.yaml"], env, **JOB, SLURM_JOB_NAME="uniapl-train",
                 UNIAPL_SOCKET_IFNAME="ib0", NCCL_SOCKET_IFNAME="eth1", NCCL_IB_HCA="mlx5_0")
    assert launch_env(result) == {
        "CUDA_DEVICE_MAX_CONNECTIONS": "1", "GLOO_SOCKET_IFNAME": "ib0", "NCCL_IB_HCA": "mlx5_0",
        "NCCL_SOCKET_IFNAME": "eth1",  # set by the user: kept
        "UNIAPL_STOP_FILE": f"{ROOT}/logs/uniapl-train-1.stop",
    }


def test_container_mode(env):
    env = dict(env, UNIAPL_CONTAINER="/images/uniapl.sqsh", UNIAPL_VENV="/does/not/exist")
    [cmd] = launched(run("train.sh", ["recipes/qwen3_8b.yaml"], env, **JOB))
    srun, torchrun, program = torchrun_part(cmd)
    assert flag(srun, "--container-image") == "/images/uniapl.sqsh"
    assert cmd[len(srun)] == "python" and program == ["--config", "recipes/qwen3_8b.yaml"]


def test_dry_run_on_a_login_node(env):
    """No SLURM_* at all: the README's `DRY_RUN=1 bash slurm/qwen3_4b_uniapl.sh` checks and prints."""
    result = run("qwen3_4b_uniapl.sh", [], env)
    [cmd] = launched(result)
    srun, torchrun, program = torchrun_part(cmd)
    assert flag(torchrun, "--nnodes") == "1" and flag(torchrun, "--nproc-per-node") == "8"  # the #SBATCH lines
    assert "dry run outside a Slurm job: 1 node(s) x 8 GPUs" in result.stderr
    [cmd] = launched(run("qwen3_32b_uniapl.sh", [], env, UNIAPL_NODES=2, UNIAPL_GPUS_PER_NODE=4))
    assert flag(torchrun_part(cmd)[1], "--nnodes") == "2" and flag(torchrun_part(cmd)[1], "--nproc-per-node") == "4"
    assert flag(torchrun_part(cmd)[0], "--nodes") == "2"
    result = run("qwen3_4b_uniapl.sh", [], dict(env, DRY_RUN="0"))
    assert result.returncode != 0 and "not inside a Slurm job" in result.stderr


def test_scaling_study_submits_each_node_count(env):
    result = run("scaling_study.sh", ["--partition=gpu", "--gpus-per-node=4", "recipes/qwen3_4b.yaml", "1 2 4",
                                      "train.steps=20"], env)
    cmds = launched(result)
    assert [flag(c, "--nodes") for c in cmds] == ["1", "2", "4"]
    for n, c in zip((1, 2, 4), cmds):
        assert c[:3] == ["sbatch", "--partition=gpu", "--gpus-per-node=4"]
        assert c[5:7] == ["slurm/train.sh", "recipes/qwen3_4b.yaml"]
        assert c[7:] == ["train.steps=20", f"logging.run_dir=runs/scaling/qwen3_4b/nodes_{n}", "checkpoint.enabled=false",
                         "checkpoint.resume=none", "logging.log_every=1"]
    assert "python tools/scaling_report.py runs/scaling/qwen3_4b" in result.stderr


def test_convert_job(env, tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    args = ["import", "--hf-dir", str(hf), "--out-dir", str(tmp_path / "mcore"), "--tp", "2"]
    [cmd] = launched(run("convert_hf.sh", args, env, SLURM_JOB_ID=9, SLURM_CPUS_ON_NODE=64))
    assert cmd[:4] == ["srun", "--nodes=1", "--ntasks=1", "--cpus-per-task=64"]
    assert cmd[-len(args) - 1:] == ["tools/convert_hf.py", *args]
    [cmd] = launched(run("convert_hf.sh", args, env))  # on a login node
    assert cmd[-len(args) - 1:] == ["tools/convert_hf.py", *args]
    script = (ROOT / "slurm" / "convert_hf.sh").read_text()
    assert "--cpus-per-task" not in "".join(line for line in script.splitlines() if line.startswith("#SBATCH"))


@pytest.mark.parametrize("script, args, slurm, messages", [
    ("qwen3_4b_uniapl.sh", [], {"DRY_RUN": "0"}, ["not inside a Slurm job"]),
    ("qwen3_4b_uniapl.sh", ["recipes/nope.yaml"], dict(JOB, UNIAPL_VENV="/no/venv", SLURM_GPUS_PER_NODE="",
                                                        SLURM_JOB_NUM_NODES="x"),
     ["no virtual environment at /no/venv", "recipe recipes/nope.yaml not found", "no GPUs in this job",
      "node count 'x' is not a positive integer", "4 problem(s) above; nothing was launched"]),
    ("train.sh", [], {"SLURM_JOB_ID": 1}, ["usage: sbatch"]),
    ("scaling_study.sh", ["--nodes=2", "recipes/qwen3_4b.yaml", "1 two"], {},
     ["node count 'two' is not a positive integer", "--nodes=2: the node counts are the study's second argument"]),
    ("convert_hf.sh", ["import", "--hf-dir", "/nope", "--out-dir", "/nope2/x"], {"SLURM_JOB_ID": 1},
     ["--hf-dir /nope: no config.json", "--out-dir /nope2/x: its parent folder does not exist"]),
    ("convert_hf.sh", ["merge"], {"SLURM_JOB_ID": 1}, ["unknown conversion 'merge'"]),
])
def test_environment_errors(env, script, args, slurm, messages):
    result = run(script, args, env, **slurm)
    assert result.returncode != 0 and "LAUNCH" not in result.stdout
    for message in messages:
        assert message in result.stderr


def test_recipe_and_path_check_before_launch(env, tmp_path):
    """Without UNIAPL_SKIP_CHECKS the recipe is resolved and its paths checked, in a job and on a login node."""
    env = dict(env, UNIAPL_SKIP_CHECKS="0", UNIAPL_MODELS=str(tmp_path / "models"), UNIAPL_DATA=str(tmp_path),
               UNIAPL_RUNS=str(tmp_path / "runs"))
    (tmp_path / "demos.jsonl").write_text("")
    for slurm in (JOB, {}):
        result = run("qwen3_4b_uniapl.sh", ["train.steps=10", "optimizer.lrr=1"], env, **slurm)
        assert result.returncode != 0 and "LAUNCH" not in result.stdout
        assert f"model.hf_dir={tmp_path}/models/Qwen3-4B: no config.json" in result.stderr
        assert f"data.rl_prompt_file={tmp_path}/rl_prompts.jsonl: no such file" in result.stderr
        assert "did you mean 'lr'" in result.stderr  # the typo is listed with the path problems
        assert "data.demo_file" not in result.stderr  # it exists
        assert f"discriminator.frozen.path={tmp_path}/models/discriminator: not a directory" in result.stderr
        assert "4 problem(s) above; nothing was launched" in result.stderr


# The batch shell's stop logic, with srun replaced by a "trainer" that honours the stop file.

def start_job(env, tmp_path, **extra) -> subprocess.Popen:
    (tmp_path / "bin" / "srun").write_text(FAKE_SRUN)
    (tmp_path / "bin" / "srun").chmod(0o755)
    full = dict(env, DRY_RUN="0", SLURM_JOB_NAME="uniapl-train", UNIAPL_STOP_FILE=str(tmp_path / "stop"),
                **{k: str(v) for k, v in {**JOB, **extra}.items()})
    proc = subprocess.Popen(["bash", str(ROOT / "slurm" / "train.sh"), "recipes/qwen3_8b.yaml"], env=full,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig, extra, code, requeued, said", [
    (signal.SIGUSR1, {"UNIAPL_STOP_GRACE_S": 0}, 0, True, "requeueing job 1"),
    (signal.SIGUSR1, {"UNIAPL_STOP_GRACE_S": 0, "UNIAPL_REQUEUE": 0}, 75, False, "submit the same command again"),
    (signal.SIGUSR1, {"UNIAPL_STOP_GRACE_S": 0, "FAKE_REQUEUE_FLAG": 0}, 75, False, "could not be requeued"),
    (signal.SIGTERM, {"UNIAPL_STOP_GRACE_S": 0}, 75, False, "submit the same command again"),
])
def test_stop_signal_saves_and_requeues(env, tmp_path, sig, extra, code, requeued, said):
    proc = start_job(env, tmp_path, **extra)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "fake trainer: saved, stopping" in out
    assert f"stop: SIG{sig.name[3:]} received" in err and said in err
    assert (tmp_path / "requeued").exists() == requeued
    assert not list(tmp_path.glob("stop*"))  # removed, so that a requeued run does not stop at once


def test_early_time_limit_signal_is_ignored(env, tmp_path):
    """--time shorter than the signal's lead sends USR1 at the start: stopping and requeueing would loop."""
    proc = start_job(env, tmp_path, FAKE_RUN_S=2)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "fake trainer: all steps done" in out and "s after the start ignored" in err
    assert not (tmp_path / "requeued").exists()


def test_readme_dry_run_line_works_on_a_login_node(env):
    """The README's `DRY_RUN=1 bash slurm/...` line, as written, outside any job."""
    [line] = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("DRY_RUN=1 bash slurm/")]
    argv = shlex.split(line, comments=True)
    assert argv[:3] == ["DRY_RUN=1", "bash", "slurm/qwen3_4b_uniapl.sh"]
    [cmd] = launched(run(argv[2].removeprefix("slurm/"), argv[3:], env))
    assert torchrun_part(cmd)[2] == ["--config", *argv[3:]]


def test_scaling_study_checks_every_node_count_before_queueing(env, tmp_path):
    """On the login node: a typo, a missing file and a layout that fits 2 nodes but not 1 stop the study."""
    env = dict(env, UNIAPL_SKIP_CHECKS="0")
    args = ["--gpus-per-node=1", "recipes/tiny_cpu.yaml", "1 2", "optimizer.lrr=1", "model.tensor_parallel=2",
            f"data.demo_file={tmp_path}/none.jsonl"]
    result = run("scaling_study.sh", args, env)
    assert result.returncode != 0 and "LAUNCH" not in result.stdout
    assert result.stderr.count("did you mean 'lr'") == 1  # found at both node counts, listed once
    assert "1 ranks are not divisible" in result.stderr and "2 ranks are not divisible" not in result.stderr
    assert f"data.demo_file={tmp_path}/none.jsonl: no such file" in result.stderr
    assert "3 problem(s) above; nothing was launched" in result.stderr
