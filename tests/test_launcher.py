"""megatron_uniapl.launcher: real torchrun launches of a small worker script (2 processes).

The worker prints its node rank and exits with the code it is given: 75 from every rank is the
trainer's "stopped on request, checkpoint saved", which plain torchrun would report as a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_uniapl.launcher import stopped_on_request
from megatron_uniapl.parallel import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# argv[1]: "CODE[@SECONDS],..." per rank: exit with CODE after SECONDS.
WORKER = """import os, sys, time
rank = int(os.environ['RANK'])
print(f"rank {rank} node {os.environ['GROUP_RANK']}", flush=True)
code, _, delay = sys.argv[1].split(",")[rank].partition("@")
time.sleep(float(delay or 0))
sys.exit(int(code))
"""


def launch(tmp_path: Path, codes: str, stop_file: str | None, node_id: str | None = None):
    (tmp_path / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "UNIAPL_STOP_FILE", "SLURM_NODEID")}
    env["PYTHONPATH"] = str(ROOT)
    if stop_file:
        env["UNIAPL_STOP_FILE"] = stop_file
    nnodes = 1
    if node_id is not None:  # a lone node 1 of 2 cannot rendezvous; it says which rank it took
        env["SLURM_NODEID"] = node_id
    cmd = [sys.executable, "-m", "megatron_uniapl.launcher", f"--nnodes={nnodes}", "--nproc-per-node=2",
           "--rdzv-backend=static", "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--max-restarts=0",
           str(tmp_path / "worker.py"), codes]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_stop_status_is_recorded_and_launch_succeeds(tmp_path):
    stop = tmp_path / "job.stop"
    result = launch(tmp_path, "75@10,75@10", str(stop), node_id="0")  # both print before either exits
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "job.stop.stopped").is_file()
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("rank")) == [
        "rank 0 node 0", "rank 1 node 0"]  # SLURM_NODEID became the node rank


def test_without_a_stop_file_the_launcher_exits_75(tmp_path):
    result = launch(tmp_path, "0,75", None)
    assert result.returncode == 75, result.stderr[-3000:]


def test_other_failures_stay_failures(tmp_path):
    stop = tmp_path / "job.stop"
    result = launch(tmp_path, "75@3,3", str(stop))  # rank 1 fails first; rank 0 would have stopped
    assert result.returncode == 1 and not (tmp_path / "job.stop.stopped").exists()
    assert "exitcode  : 3" in result.stderr
    result = launch(tmp_path, "0,0", str(stop))
    assert result.returncode == 0 and not (tmp_path / "job.stop.stopped").exists()


def test_node_rank_from_slurm_nodeid(tmp_path, monkeypatch):
    """A node 1 reads SLURM_NODEID as its rank (checked without a node 0 via torchrun's parsed args)."""
    from torch.distributed import run as torchrun

    from megatron_uniapl import launcher

    seen = {}
    monkeypatch.setenv("SLURM_NODEID", "1")
    # The launcher sets PET_NODE_RANK in this process's environment: recorded here so that it is
    # removed afterwards (a leftover made a later torchrun wait forever as node 1 of 1).
    monkeypatch.setenv("PET_NODE_RANK", "")
    monkeypatch.delenv("PET_NODE_RANK")
    monkeypatch.setattr(torchrun, "run", lambda args: seen.setdefault("node_rank", args.node_rank))
    assert launcher.main(["--nnodes=2", "--rdzv-backend=static", "--master-addr=n0", "x.py"]) == 0
    assert seen == {"node_rank": 1}


def test_stopped_on_request():
    assert stopped_on_request([75, 75]) and stopped_on_request([75])
    assert stopped_on_request([75, -15])  # a worker torchrun terminated once the first had left
    assert not stopped_on_request([]) and not stopped_on_request([75, 1]) and not stopped_on_request([-9])
