"""The study's report: one table pooled over seeds, per-type and per-group breakdowns, and plots.

Inputs are the cells the driver wrote (`<out>/<method>/seed<s>/`: `train/metrics.jsonl` and
`eval/{greedy,sampled}/`), the task files (evaluation prompts, their groups, the teacher's answers)
and the base model (the yardstick of the log-prob analysis). Outputs in `<out>/`:

    results.md / results.json   accuracy (mean and sample std over seeds) per method, the teacher
                                and the warm start; per constraint type; per combination group;
                                response length, teacher-style rate and log-probs
    reward_curves.png           training reward (and the fraction of groups with no task signal)
                                per step, mean over seeds, one line per method
    distributions.png           response length and per-token log-prob (under the warm start) of
                                every method's greedy answers and of the teacher's, one figure

Log-probs are taken under the warm start, the one model every method began from, so they say how
far each method moved its answers from a common origin and where the teacher's answers sit on that
scale. "States the fact" is the share of answers that name the prompt's object and its colour, the
content no constraint checks. "Teacher style" is the fraction of answers in the teacher's manner (its opening word
"Certainly"): how much of the teacher a method imitates, constraints aside.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from pathlib import Path

import numpy as np

from megatron_uniapl.data.schemas import ChatMessage, read_demonstrations, read_eval_set
from megatron_uniapl.eval.ifeval import evaluate
from megatron_uniapl.metrics.sinks import read_record
from megatron_uniapl.rewards.verify import follow_list
from megatron_uniapl.study.task import OBJECTS

logger = logging.getLogger(__name__)

GROUPS = ("single", "seen_pair", "unseen_pair", "unseen_triple")
"""Evaluation groups (study/task.py): combinations the demonstrations show or never show."""
TEACHER_MARK = "certainly"
"""The teacher's opening word; no other source in the task uses it."""
CURVES = ("reward/task_mean", "reward/equal_groups_frac")
"""Training metrics plotted per step."""


def mean_sd(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for one value) of per-seed values."""
    return {"mean": float(statistics.fmean(values)), "sd": float(statistics.stdev(values)) if len(values) > 1 else 0.0,
            "n": len(values)}


def _responses(path: Path) -> list[str]:
    return [json.loads(line)["response"] for line in path.read_text(encoding="utf-8").splitlines()]


def answer_stats(prompts, responses: list[str], groups: dict) -> dict:
    """Accuracies overall, per group and per type, and the teacher-style rate, of one answer set."""
    report = evaluate(prompts, responses)
    strict = [follow_list(p.constraints, r, False) for p, r in zip(prompts, responses)]
    per_group = {}
    for g in GROUPS:
        rows = [all(v) for p, v in zip(prompts, strict) if groups[str(p.key)] == g]
        per_group[g] = sum(rows) / len(rows) if rows else float("nan")
    return {"prompt_strict": report.prompt_strict, "instruction_strict": report.instruction_strict,
            "per_group": per_group, "per_type": {t: v["strict"] for t, v in report.per_type.items()},
            "teacher_style": sum(TEACHER_MARK in r.lower() for r in responses) / len(responses),
            "fact": sum(states_fact(p.prompt, r) for p, r in zip(prompts, responses)) / len(responses)}


def states_fact(prompt: str, response: str) -> bool:
    """Whether `response` names the prompt's object and that object's colour (any case): the
    content every answer needs, which no constraint checks."""
    text = response.lower()
    return any(prompt.startswith(f"Describe the {name}.") and re.search(rf"\b{name}\b", text) is not None
               and re.search(rf"\b{colour}\b", text) is not None for name, colour, _ in OBJECTS)


def cell_dirs(out: Path, method: str, seeds: int) -> list[Path]:
    return [out / method / f"seed{s}" for s in range(seeds) if (out / method / f"seed{s}" / "done.json").is_file()]


def _pool(per_seed: list[dict]) -> dict:
    """Per-seed stats -> mean/sd of every number."""
    def walk(items: list):
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([i[k] for i in items]) for k in first}
        return mean_sd([float(i) for i in items])
    return walk(per_seed)


def _fmt(cell: dict, pct: bool = True) -> str:
    scale = 100.0 if pct else 1.0
    if cell["n"] == 1:
        return f"{cell['mean'] * scale:.1f}"
    return f"{cell['mean'] * scale:.1f} ± {cell['sd'] * scale:.1f}"


def _curves(cells: list[Path]) -> dict[str, dict[str, list]]:
    """Metric -> {"steps", "values"}: the mean over seeds at the steps where every seed logged it
    (a staged run logs rewards only in its RL stage)."""
    out = {}
    # The last row of a step wins: a resumed run repeats the steps after its checkpoint.
    by_step = [{r["step"]: r for r in read_record(c / "train")} for c in cells]
    for key in CURVES:
        steps = sorted(set.intersection(*({s for s, r in b.items() if key in r} for b in by_step)))
        if steps:
            out[key] = {"steps": steps, "values": [float(np.mean([b[s][key] for b in by_step])) for s in steps]}
    return out


def _times(cells: list[Path]) -> dict:
    """Mean seconds per training step (all steps of all seeds) and per cell (train + evaluation)."""
    steps = [r["time/step_s"] for c in cells for r in read_record(c / "train") if "time/step_s" in r]
    cell = [json.loads((c / "done.json").read_text()).get("seconds", float("nan")) for c in cells]
    return {"step_s": float(np.mean(steps)) if steps else float("nan"), "cell_s": float(np.mean(cell))}


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_curves(path: Path, curves: dict[str, dict[str, list[float]]]) -> None:
    figure = _figure((11, 4))
    for i, key in enumerate(CURVES):
        axes = figure.add_subplot(1, len(CURVES), i + 1)
        for method, series in curves.items():
            if key in series:
                axes.plot(series[key]["steps"], series[key]["values"], label=method)
        axes.set_title(key + " (mean over seeds)")
        axes.set_xlabel("step")
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_distributions(path: Path, lengths: dict[str, np.ndarray], logprobs: dict[str, np.ndarray]) -> None:
    figure = _figure((11, 4))
    for i, (title, data, unit) in enumerate((("response length", lengths, "tokens"),
                                             ("per-token log-prob under the warm start", logprobs, "nats"))):
        axes = figure.add_subplot(1, 2, i + 1)
        edges = np.histogram_bin_edges(np.concatenate(list(data.values())), bins=30)
        for name, values in data.items():
            axes.hist(values, bins=edges, density=True, histtype="step", linewidth=2 if name == "teacher" else 1.2,
                      label=f"{name} (mean {values.mean():.2f})")
        axes.set_title(title)
        axes.set_xlabel(unit)
        axes.set_ylabel("density")
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _distribution_inputs(scorer, prompts, answer_sets: dict[str, list[list[str]]]) -> tuple[dict, dict]:
    lengths, logprobs = {}, {}
    for name, sets in answer_sets.items():
        lp = [scorer.score((ChatMessage("user", p.prompt),), r) for answers in sets for p, r in zip(prompts, answers)]
        lengths[name] = np.array([x.size for x in lp], dtype=np.float64)
        logprobs[name] = np.concatenate([x for x in lp if x.size])
    return lengths, logprobs


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = ["| method | seeds | prompt strict (greedy) | instruction strict (greedy) | prompt strict (sampled) "
             "| states the fact | teacher style | length (tokens) | log-prob / token |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        g, s = r["greedy"], r.get("sampled")
        lines.append(f"| {name} | {r['seeds']} | {_fmt(g['prompt_strict'])} | {_fmt(g['instruction_strict'])} | "
                     f"{_fmt(s['prompt_strict']) if s else '-'} | {_fmt(g['fact'])} | {_fmt(g['teacher_style'])} | "
                     f"{r['length_mean']:.1f} | {r['logprob_mean']:.3f} |")
    lines += ["", "Prompt-level strict accuracy (greedy) by combination group:", "",
              "| method | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r["greedy"]["per_group"][g]) for g in GROUPS) + " |")
    lines += ["", "Time on this machine (mean over seeds):", "", "| method | seconds per step | seconds per cell "
              "(train + evaluation) |", "|---|---|---|"]
    for name, r in rows.items():
        if "time" in r:
            lines.append(f"| {name} | {r['time']['step_s']:.2f} | {r['time']['cell_s']:.0f} |")
    types = sorted(next(iter(rows.values()))["greedy"]["per_type"])
    lines += ["", "Instruction-level strict accuracy (greedy) by constraint type:", "",
              "| type | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for t in types:
        lines.append(f"| {t} | " + " | ".join(_fmt(r["greedy"]["per_type"][t]) for r in rows.values()) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, methods: list[str], seeds: int, data_dir: Path, base_model: Path) -> dict:
    """Pool every finished cell into results.md / results.json and draw the plots."""
    from megatron_uniapl.eval.logprobs import LogProbScorer

    prompts = read_eval_set(data_dir / "eval.jsonl")
    groups = json.loads((data_dir / "eval_groups.json").read_text())
    teacher = {d.id: d.response for d in read_demonstrations(data_dir / "teacher_eval.jsonl")}
    teacher_answers = [teacher[str(p.key)] for p in prompts]
    rows: dict[str, dict] = {}
    answer_sets: dict[str, list[list[str]]] = {"teacher": [teacher_answers]}
    curves: dict[str, dict] = {}
    rows["teacher"] = {"seeds": 1, "greedy": _pool([answer_stats(prompts, teacher_answers, groups)])}
    for method in ["base", *methods]:
        cells = cell_dirs(out, method, 1 if method == "base" else seeds)
        if not cells:
            continue
        row: dict = {"seeds": len(cells)}
        for mode in ("greedy", "sampled"):
            row[mode] = _pool([answer_stats(prompts, _responses(c / "eval" / mode / "responses.jsonl"), groups)
                               for c in cells])
        rows[method] = row
        answer_sets[method] = [_responses(c / "eval" / "greedy" / "responses.jsonl") for c in cells]
        if method != "base":
            curves[method] = _curves(cells)
            row["time"] = _times(cells)
    lengths, logprobs = _distribution_inputs(LogProbScorer(base_model), prompts, answer_sets)
    for name in rows:
        rows[name]["length_mean"] = float(lengths[name].mean())
        rows[name]["logprob_mean"] = float(logprobs[name].mean())
    report = {"methods": methods, "seeds": seeds, "eval_prompts": len(prompts), "rows": rows, "curves": curves}
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(out / "reward_curves.png", curves)
    plot_distributions(out / "distributions.png", lengths, logprobs)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(report), encoding="utf-8")
    logger.info("report: %s", out / "results.md")
    return report
