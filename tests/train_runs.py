"""Starting real training runs as subprocesses, waiting for what they write, and reading the
record back: the helpers of the fault-injection and bad-input CLI suites."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bad_input_utils import ROOT, SMALL, TINY_RECIPE

_STEP_LINE = re.compile(r"megatron_uniapl\.metrics\.sinks: step (\d+):")
TIMING_KEYS = ("time", "throughput/", "perf/", "mem/", "weight_sync/")
"""Row keys that measure wall time: everything else in a row is a pure function of the run."""


def clean_env(**extra: str) -> dict:
    """A fresh command line's environment: no rendezvous variables of this test process's world."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "UNIAPL_STOP_FILE"):
        if name not in extra:
            env.pop(name, None)
    return env


def train_command(run_dir: Path, hf_dir: Path, extra=(), ranks: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", "--max-restarts=0",
                "-m"] if ranks > 1 else [sys.executable, "-m"]
    return [*launcher, "megatron_uniapl.train", "--config", str(TINY_RECIPE), *SMALL,
            f"logging.run_dir={run_dir}", f"model.hf_dir={hf_dir}", *extra]


class Run:
    """One training process (group) with its output in a file (a pipe could fill and block it)."""

    def __init__(self, command: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env or clean_env(), stdout=self.out,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def output(self) -> str:
        if not self.out.closed:
            self.out.flush()
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 900) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.out.close()

    def wait_for(self, what: str, condition, timeout: float = 900, poll: float = 0.05) -> None:
        """Poll `condition()` until true; fail with the output if the run ends first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended (rc {self.proc.returncode}) before {what}:\n{self.output()[-4000:]}")
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}")

    def steps_done(self) -> list[int]:
        """Steps this process finished, from its console lines (log_every=1)."""
        return [int(m) for m in _STEP_LINE.findall(self.output())]

    def signal_group(self, sig) -> None:
        os.killpg(self.proc.pid, sig)

    def signal_leader(self, sig) -> None:
        os.kill(self.proc.pid, sig)


def rows(run_dir: Path) -> dict[int, dict]:
    out = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            out[row["step"]] = row
    return out


def last_step(run_dir: Path) -> int:
    return max(rows(run_dir), default=0)


def deterministic(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(TIMING_KEYS)}


def assert_rows_equal(actual: dict[int, dict], expected: dict[int, dict], steps, rel: float = 0.0,
                      ignore: tuple[str, ...] = ()) -> None:
    """Every deterministic value of `steps` equal (bit for bit when rel=0), except `ignore`."""
    import pytest

    for step in steps:
        a, e = deterministic(actual[step]), deterministic(expected[step])
        for key in ignore:
            a.pop(key, None), e.pop(key, None)
        assert sorted(a) == sorted(e), (step, sorted(set(a) ^ set(e)))
        for key, value in e.items():
            if rel and isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=rel, abs=1e-9), (step, key)
            else:
                assert a[key] == value, (step, key, a[key], value)
