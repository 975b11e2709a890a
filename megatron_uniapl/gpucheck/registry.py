"""The checks, what each needs, and the runner that starts each in its own process with a limit.

A check is a function `fn(workdir: Path) -> dict` in `model_checks` or `stack_checks`: it raises
when the GPU path is broken and returns its figures otherwise. Its own process means a crash, a
hang or leaked GPU memory in one check cannot spoil the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.gpucheck.environment import Machine

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    needs: tuple[str, ...]
    """Any of "cuda", "vllm", "te", "fp8" (compute capability >= 8.9), "gpus2" (two GPUs)."""
    limit_s: int
    """Time limit of the check's process (start-up and imports included)."""
    module: str
    """`model_checks` or `stack_checks`: where the function `name` lives."""


CHECKS = (
    # torch + megatron-core on a GPU: what a bare GPU image can run (about 3-4 minutes in all).
    Check("portable_bf16", "portable spec, bf16, vs transformers", ("cuda",), 150, "model_checks"),
    Check("sequence_parallel", "bf16 with sequence parallelism (TP=2)", ("cuda", "gpus2", "te"), 150, "model_checks"),
    Check("packed_attention", "packed rows vs separate samples", ("cuda",), 120, "model_checks"),
    Check("offload_memory", "optimizer offload frees and restores memory", ("cuda",), 120, "model_checks"),
    Check("model_benchmark", "Megatron vs transformers, 0.6B and 4B", ("cuda",), 240, "model_checks"),
    # The full stack.
    Check("fp8_packed_row", "FP8 forward, odd-length packed row", ("cuda", "te", "fp8"), 150, "model_checks"),
    Check("train_resume", "2 steps: TE, sleep mode, sync, offload; resume", ("cuda", "vllm", "te"), 420, "stack_checks"),
    Check("logprob_parity", "engine vs trainer log-probs after a sync", ("cuda", "vllm"), 240, "stack_checks"),
    Check("converted_checkpoint", "train from a converted checkpoint (TE)", ("cuda", "te"), 300, "stack_checks"),
    Check("pytest_gpu", "pytest -m gpu", ("cuda",), 300, "stack_checks"),
)


def skip_reason(check: Check, machine: Machine) -> str | None:
    """Why `check` cannot run on `machine` (the first missing need), or None. Pure."""
    for need in check.needs:
        if need == "cuda" and machine.cuda_problem:
            return "no CUDA device (the reason is under GPU above)"
        if need == "vllm" and machine.vllm_problem:
            return machine.vllm_problem
        if need == "te" and machine.te_problem:
            return machine.te_problem
        if need == "fp8" and (machine.cuda.capability or (0, 0)) < (8, 9):
            return f"FP8 needs compute capability >= 8.9; this GPU is {machine.cuda.capability}"
        if need == "gpus2" and machine.gpus < 2:
            return f"needs 2 GPUs (tensor parallelism 2); {machine.gpus} visible"
    return None


@dataclass
class Outcome:
    name: str
    title: str
    status: str
    """"ok", "FAILED", "skipped" or "timeout"."""
    detail: str
    seconds: float = 0.0


def run_check(check: Check, workdir: Path, limit_s: float) -> Outcome:
    """Run one check in a fresh process; its last stdout line is `RESULT <json>`."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "log.txt"
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    try:
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "megatron_uniapl.gpucheck.one", check.name, str(workdir)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return Outcome(check.name, check.title, "timeout", f"no result after {limit_s:.0f} s (log: {log})",
                       time.perf_counter() - start)
    seconds = time.perf_counter() - start
    result = next((line[7:] for line in reversed(proc.stdout.splitlines()) if line.startswith("RESULT ")), None)
    if result is None:
        tail = log.read_text().strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return Outcome(check.name, check.title, "FAILED", f"{tail[0]} (log: {log})", seconds)
    data = json.loads(result)
    return Outcome(check.name, check.title, data["status"], data["detail"], seconds)


def format_table(outcomes: list[Outcome]) -> str:
    """The check's result table. Pure."""
    width = max(len(o.title) for o in outcomes)
    lines = [f"{'check':<{width}}  {'time':>6}  result"]
    for o in outcomes:
        secs = f"{o.seconds:5.0f}s" if o.status in ("ok", "FAILED", "timeout") else "     -"
        verdict = o.status if o.status == "ok" else f"{o.status}:"
        lines.append(f"{o.title:<{width}}  {secs}  {verdict} {o.detail}".rstrip())
    return "\n".join(lines)


def run_all(machine: Machine, workdir: Path, budget_s: float, only: list[str] | None = None, echo=print) -> list[Outcome]:
    """Every check (or those named in `only`), skipped with the reason where the machine lacks
    what it needs, within `budget_s` seconds in all."""
    deadline = time.monotonic() + budget_s
    outcomes = []
    for check in CHECKS:
        if only and check.name not in only:
            continue
        reason = skip_reason(check, machine)
        left = deadline - time.monotonic()
        if reason is None and left < 30:
            reason = f"out of time (budget {budget_s:.0f} s)"
        if reason is not None:
            outcome = Outcome(check.name, check.title, "skipped", reason)
        else:
            echo(f"running {check.name} (limit {min(check.limit_s, left):.0f} s) ...")
            outcome = run_check(check, workdir / check.name, min(check.limit_s, left))
        outcomes.append(outcome)
    return outcomes
