"""The Slurm scripts in dry-run mode: the exact srun/torchrun/sbatch commands for given Slurm
variables, and the environment checks' errors. Runs bash with fake SLURM_* variables; `scontrol`
is replaced by a small script (the only test double: there is no Slurm here)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_SCONTROL = r"""#!/bin/bash
# Test double of `scontrol show hostnames LIST` for lists like node[003-005] or a,b.
[[ "$1 $2" == "show hostnames" ]] || exit 1
list="$3"
if [[ "$list" =~ ^([a-z]+)\[([0-9]+)-([0-9]+)\]$ ]]; then
    width=${#BASH_REMATCH[2]}
    for ((i = 10#${BASH_REMATCH[2]}; i <= 10#${BASH_REMATCH[3]}; i++)); do
        printf "%s%0${width}d\n" "${BASH_REMATCH[1]}" "$i"
    done
else
    tr ',' '\n' <<< "$list"
fi
"""


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "DRY_RUN": "1",
        "UNIAPL_REPO": str(ROOT), "UNIAPL_VENV": sys.prefix, "UNIAPL_SKIP_CHECKS": "1",
        "PYTHONPATH": str(ROOT),
    }


def run(script: str, args: list[str], env: dict, **slurm) -> subprocess.CompletedProcess:
    full = dict(env, **{k: str(v) for k, v in slurm.items()})
    return subprocess.run(["bash", str(ROOT / "slurm" / script), *args], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def launched(result: subprocess.CompletedProcess) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[len("LAUNCH:"):]) for line in result.stdout.splitlines() if line.startswith("LAUNCH:")]


def flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def torchrun_part(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(srun args, torchrun args, program args) of a launch command."""
    t = argv.index("torch.distributed.run")
    m = argv.index("megatron_uniapl.train")
    return argv[: t - 2], argv[t + 1: m - 1], argv[m + 1:]


def test_4b_one_node(env):
    [cmd] = launched(run("qwen3_4b_uniapl.sh", [], env, SLURM_JOB_ID=4242, SLURM_JOB_NODELIST="gpu017",
                         SLURM_JOB_NUM_NODES=1, SLURM_GPUS_ON_NODE=8))
    srun, torchrun, program = torchrun_part(cmd)
    assert srun[0] == "srun" and flag(srun, "--nodes") == "1" and flag(srun, "--ntasks-per-node") == "1"
    assert flag(srun, "--chdir") == str(ROOT)
    assert cmd[len(srun)] == f"{sys.prefix}/bin/python"
    assert flag(torchrun, "--nnodes") == "1" and flag(torchrun, "--nproc-per-node") == "8"
    assert flag(torchrun, "--rdzv-endpoint") == "gpu017:24242"  # 20000 + 4242 % 20000
    assert flag(torchrun, "--rdzv-backend") == "c10d" and flag(torchrun, "--rdzv-id") == "4242"
    assert program == ["--config", "recipes/qwen3_4b.yaml"]


def test_32b_four_nodes_with_recipe_and_overrides(env):
    args = ["recipes/variants/qwen3_4b_a_grpo.yaml", "optimizer.lr=1e-6", "optimizer.betas=[0.9, 0.95]"]
    [cmd] = launched(run("qwen3_32b_uniapl.sh", args, env, SLURM_JOB_ID=123456, SLURM_JOB_NODELIST="node[003-006]",
                         SLURM_JOB_NUM_NODES=4, SLURM_GPUS_PER_NODE="h100:8"))
    srun, torchrun, program = torchrun_part(cmd)
    assert flag(srun, "--nodes") == "4"
    assert flag(torchrun, "--nnodes") == "4" and flag(torchrun, "--nproc-per-node") == "8"
    assert flag(torchrun, "--rdzv-endpoint") == "node003:23456"  # the first host of the allocation
    assert program == ["--config", *args]  # the override with spaces stays one argument


def test_default_recipes_and_overrides_only(env):
    slurm = dict(SLURM_JOB_ID=7, SLURM_JOB_NODELIST="a1,a2", SLURM_JOB_NUM_NODES=2, UNIAPL_GPUS_PER_NODE=4,
                 UNIAPL_RDZV_PORT=29555)
    [cmd] = launched(run("qwen3_0p6b_uniapl.sh", ["train.steps=3"], env, **slurm))
    srun, torchrun, program = torchrun_part(cmd)
    assert program == ["--config", "recipes/qwen3_0p6b.yaml", "train.steps=3"]
    assert flag(torchrun, "--rdzv-endpoint") == "a1:29555" and flag(torchrun, "--nproc-per-node") == "4"
    [cmd] = launched(run("qwen3_32b_uniapl.sh", [], env, **slurm))
    assert torchrun_part(cmd)[2] == ["--config", "recipes/qwen3_32b.yaml"]


def test_container_mode(env):
    env = dict(env, UNIAPL_CONTAINER="/images/uniapl.sqsh", UNIAPL_VENV="/does/not/exist")
    [cmd] = launched(run("train.sh", ["recipes/qwen3_8b.yaml"], env, SLURM_JOB_ID=1, SLURM_JOB_NODELIST="g1",
                         SLURM_JOB_NUM_NODES=1))
    srun, torchrun, program = torchrun_part(cmd)
    assert flag(srun, "--container-image") == "/images/uniapl.sqsh"
    assert cmd[len(srun)] == "python" and program == ["--config", "recipes/qwen3_8b.yaml"]


def test_scaling_study_submits_each_node_count(env):
    result = run("scaling_study.sh", ["recipes/qwen3_4b.yaml", "1 2 4", "train.steps=20"], env)
    cmds = launched(result)
    assert [flag(c, "--nodes") for c in cmds] == ["1", "2", "4"]
    for n, c in zip((1, 2, 4), cmds):
        assert c[0] == "sbatch" and c[3:5] == ["slurm/train.sh", "recipes/qwen3_4b.yaml"]
        assert c[5:] == ["train.steps=20", f"logging.run_dir=runs/scaling/qwen3_4b/nodes_{n}", "checkpoint.every=0",
                         "checkpoint.resume=none"]


def test_convert_job(env, tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    args = ["import", "--hf-dir", str(hf), "--out-dir", str(tmp_path / "mcore"), "--tp", "2"]
    [cmd] = launched(run("convert_hf.sh", args, env, SLURM_JOB_ID=9))
    assert cmd[:3] == ["srun", "--nodes=1", "--ntasks=1"]
    assert cmd[-len(args) - 1:] == ["tools/convert_hf.py", *args]


@pytest.mark.parametrize("script, args, slurm, message", [
    ("qwen3_4b_uniapl.sh", [], {}, "SLURM_JOB_ID is not set"),
    ("qwen3_4b_uniapl.sh", [], {"SLURM_JOB_ID": 1, "SLURM_JOB_NODELIST": "g1", "SLURM_JOB_NUM_NODES": 1,
                                "UNIAPL_VENV": "/no/venv"}, "no virtual environment at /no/venv"),
    ("qwen3_4b_uniapl.sh", ["recipes/nope.yaml"], {"SLURM_JOB_ID": 1, "SLURM_JOB_NODELIST": "g1",
                                                   "SLURM_JOB_NUM_NODES": 1}, "recipe recipes/nope.yaml not found"),
    ("train.sh", [], {"SLURM_JOB_ID": 1}, "usage: sbatch"),
    ("scaling_study.sh", ["recipes/qwen3_4b.yaml", "1 two"], {}, "node count 'two' is not a positive integer"),
    ("convert_hf.sh", ["import", "--hf-dir", "/nope", "--out-dir", "/tmp/x"], {"SLURM_JOB_ID": 1},
     "--hf-dir /nope: no config.json"),
    ("convert_hf.sh", ["merge"], {"SLURM_JOB_ID": 1}, "unknown conversion 'merge'"),
])
def test_environment_errors(env, script, args, slurm, message):
    result = run(script, args, env, **slurm)
    assert result.returncode != 0 and "LAUNCH" not in result.stdout
    assert message in result.stderr


def test_recipe_and_path_check_before_launch(env, tmp_path):
    """Without UNIAPL_SKIP_CHECKS the recipe is resolved and its paths checked on the batch host."""
    env = dict(env, UNIAPL_SKIP_CHECKS="0", UNIAPL_MODELS=str(tmp_path / "models"), UNIAPL_DATA=str(tmp_path),
               UNIAPL_RUNS=str(tmp_path / "runs"))
    (tmp_path / "demos.jsonl").write_text("")
    result = run("qwen3_4b_uniapl.sh", ["train.steps=10"], env, SLURM_JOB_ID=5, SLURM_JOB_NODELIST="g1",
                 SLURM_JOB_NUM_NODES=1)
    assert result.returncode != 0 and "LAUNCH" not in result.stdout
    assert f"model.hf_dir={tmp_path}/models/Qwen3-4B: no config.json" in result.stderr
    assert f"data.rl_prompt_file={tmp_path}/rl_prompts.jsonl: no such file" in result.stderr
    assert "data.demo_file" not in result.stderr  # it exists
    assert "nothing was launched" in result.stderr
