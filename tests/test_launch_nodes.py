"""The `nodes` metric: torchrun's node count, not LOCAL_WORLD_SIZE as vLLM's CPU platform rewrites it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from megatron_uniapl import parallel

ROOT = Path(__file__).resolve().parents[1]


def test_group_world_size_is_the_node_count(monkeypatch):
    monkeypatch.setenv("GROUP_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # what vLLM's CPU platform writes (its tensor-parallel size)
    assert parallel.launch_nodes(16) == 4


def test_local_world_size_as_launched(monkeypatch):
    monkeypatch.delenv("GROUP_WORLD_SIZE", raising=False)
    monkeypatch.setattr(parallel, "_LAUNCH_LOCAL_WORLD_SIZE", None)
    assert parallel.launch_nodes(8) == 1  # no launcher


def test_local_world_size_is_read_before_an_engine_rewrites_it():
    """1 node x 2 processes: the value at import counts, not the one vLLM writes later."""
    code = ("import os; from megatron_uniapl import parallel; os.environ['LOCAL_WORLD_SIZE'] = '1'; "
            "print(parallel.launch_nodes(2))")
    env = {k: v for k, v in os.environ.items() if k != "GROUP_WORLD_SIZE"}
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, LOCAL_WORLD_SIZE="2", PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
