"""Scaling-study report: several runs' `metrics.jsonl` -> a table and a plot.

Each run writes one JSON object per optimizer step with (at least) `throughput/tokens_per_s`,
`time/step_s`, `nodes` and `gpus`, and per-phase times `time/<phase>_s` (generate, train, sync...).
For each run, after dropping the first `skip` steps (start-up, compilation, cache warm-up):

    tokens_per_s   = sum_i(tokens_per_s_i * step_s_i) / sum_i(step_s_i)   (total tokens / total time)
    per_gpu        = tokens_per_s / gpus
    phase time     = mean over steps of time/<phase>_s
    efficiency     = per_gpu / per_gpu of the run with the fewest GPUs    (1.0 = linear scaling)

    python tools/scaling_report.py runs/scaling/qwen3_4b --plot scaling.png     (a study folder)
    python tools/scaling_report.py runs/scaling/qwen3_4b/nodes_* --plot scaling.png
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

TOKENS = "throughput/tokens_per_s"
STEP = "time/step_s"


class ReportError(ValueError):
    """A metrics file that cannot be summarized; the message names the file (and line)."""


@dataclass
class RunSummary:
    """One run's averages over its measured steps."""

    name: str
    """Run label (its directory name)."""
    nodes: int
    """Nodes of the run."""
    gpus: int
    """GPUs of the run."""
    steps: int
    """Steps averaged (after the skipped ones)."""
    tokens_per_s: float
    """Total tokens / total step time over the measured steps."""
    step_s: float
    """Mean step time."""
    phases: dict[str, float] = field(default_factory=dict)
    """Mean seconds per phase, e.g. {"generate": 12.0, "train": 30.0}."""
    efficiency: float = 1.0
    """Tokens/s per GPU relative to the run with the fewest GPUs."""

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.gpus


def metrics_path(path: str | Path) -> Path:
    """`path` itself if it is a file, else `path/metrics.jsonl`."""
    path = Path(path)
    return path if path.is_file() else path / "metrics.jsonl"


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories or metrics files; a folder without metrics.jsonl whose subfolders have one
    (a scaling study, `runs/scaling/<recipe>`) stands for those subfolders."""
    runs = []
    for path in map(Path, paths):
        children = sorted(p.parent for p in path.glob("*/metrics.jsonl")) if path.is_dir() else []
        runs.extend(children if children and not (path / "metrics.jsonl").is_file() else [path])
    return runs


def read_metrics(path: str | Path) -> list[dict]:
    """The step records of a metrics file; ReportError names file:line for a bad line."""
    path = metrics_path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no metrics file")
    records = []
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReportError(f"{path}:{number}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ReportError(f"{path}:{number}: expected a JSON object")
            records.append(record)
    return records


def summarize(path: str | Path, skip: int = 1, name: str | None = None) -> RunSummary:
    """The `RunSummary` of one run (formulas in the module docstring)."""
    file = metrics_path(path)
    records = [r for r in read_metrics(path) if TOKENS in r and STEP in r]
    measured = records[skip:]
    if not measured:
        hint = ""
        if records and max(int(r.get("step", 0)) for r in records) > len(records):
            hint = (f"; it has rows for {len(records)} of {max(int(r.get('step', 0)) for r in records)} steps: run with "
                    f"logging.log_every=1 (slurm/scaling_study.sh does) or report with --skip 0")
        raise ReportError(f"{file}: no steps with {TOKENS} and {STEP} after skipping {skip}{hint}")
    for key in ("nodes", "gpus"):
        if key not in measured[-1]:
            raise ReportError(f"{file}: the step records have no {key!r} field")
    total_time = sum(float(r[STEP]) for r in measured)
    total_tokens = sum(float(r[TOKENS]) * float(r[STEP]) for r in measured)
    phase_keys = sorted({k for r in measured for k in r if k.startswith("time/") and k.endswith("_s") and k != STEP})
    phases = {}
    for key in phase_keys:
        values = [float(r[key]) for r in measured if key in r and math.isfinite(float(r[key]))]
        if values:
            phases[key[len("time/"):-len("_s")]] = sum(values) / len(values)
    return RunSummary(
        name=name or (Path(path).name if Path(path).is_dir() else Path(path).parent.name),
        nodes=int(measured[-1]["nodes"]), gpus=int(measured[-1]["gpus"]), steps=len(measured),
        tokens_per_s=total_tokens / total_time, step_s=total_time / len(measured), phases=phases,
    )


def compare(runs: list[RunSummary]) -> list[RunSummary]:
    """The runs sorted by GPU count with `efficiency` set against the smallest."""
    if not runs:
        raise ReportError("no runs to compare")
    ordered = sorted(runs, key=lambda r: (r.gpus, r.name))
    base = ordered[0].tokens_per_s_per_gpu
    for run in ordered:
        run.efficiency = run.tokens_per_s_per_gpu / base
    return ordered


def table(runs: list[RunSummary]) -> str:
    """A fixed-width text table of the compared runs."""
    phases = sorted({p for r in runs for p in r.phases})
    head = ["run", "nodes", "gpus", "steps", "tokens/s", "tokens/s/gpu", "efficiency", "step s"] + [f"{p} s" for p in phases]
    rows = [head]
    for r in runs:
        rows.append([r.name, str(r.nodes), str(r.gpus), str(r.steps), f"{r.tokens_per_s:.1f}",
                     f"{r.tokens_per_s_per_gpu:.1f}", f"{r.efficiency:.3f}", f"{r.step_s:.2f}"]
                    + [f"{r.phases[p]:.2f}" if p in r.phases else "-" for p in phases])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def plot(runs: list[RunSummary], out: str | Path) -> Path:
    """A PNG: tokens/s against GPUs (with the linear ideal) and the step time per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpus = [r.gpus for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(gpus, [r.tokens_per_s for r in runs], "o-", label="measured")
    left.plot(gpus, [runs[0].tokens_per_s_per_gpu * g for g in gpus], "--", color="gray", label="linear")
    for r in runs:
        left.annotate(f"{r.efficiency:.0%}", (r.gpus, r.tokens_per_s), textcoords="offset points", xytext=(4, -12))
    left.set(xlabel="GPUs", ylabel="tokens/s", title="throughput (labels: scaling efficiency)")
    left.legend()
    phases = sorted({p for r in runs for p in r.phases})
    bottom = [0.0] * len(runs)
    labels = [f"{r.gpus}" for r in runs]
    for p in phases:
        values = [r.phases.get(p, 0.0) for r in runs]
        right.bar(labels, values, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set(xlabel="GPUs", ylabel="seconds per step", title="step time by phase")
    if phases:
        right.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tabulate and plot a scaling study from metrics.jsonl files")
    parser.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl), metrics files, or a study "
                        "folder holding one run directory per node count")
    parser.add_argument("--skip", type=int, default=1, help="leading steps to leave out of every run")
    parser.add_argument("--plot", default=None, help="write a PNG here")
    args = parser.parse_args(argv)
    try:
        runs = compare([summarize(p, args.skip) for p in expand_runs(args.runs)])
    except ReportError as err:
        print(f"error: {err}")
        return 2
    print(table(runs))
    if args.plot:
        print(f"plot: {plot(runs, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
