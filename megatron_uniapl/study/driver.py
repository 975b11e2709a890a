"""The study driver: every method x seed trained, evaluated and reported, resumable.

    python tools/study.py recipes/study/{sft,grpo,sft_then_grpo,chord,a_grpo,uniapl}.yaml --seeds 3

For each recipe (a method; its file name is the method's name) and seed s = 0..n-1 the driver
1. trains it from the shared warm start (`prepare.prepare`) with `train.seed=s` in its own
   run directory, as a user would (`python -m megatron_uniapl.train`, a child process);
2. evaluates the final checkpoint on the held-out set, greedy and sampled (`evaluate.py`);
3. marks the cell done (`done.json`, written last).
The warm start itself is evaluated as the "base" row. Then `report.write_report` pools the
seeds into results.md / results.json and the plots.

A cell with `done.json` is skipped; a cell without one is redone from where it stopped (the
training run resumes from its last checkpoint, a finished one reports complete at once), so an
interrupted study continues where it was.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from megatron_uniapl.data.manifest import write_text_atomic
from megatron_uniapl.study.prepare import latest_checkpoint, prepare

logger = logging.getLogger(__name__)

DONE = "done.json"
"""The file that marks a (method, seed) cell complete; written last, atomically."""


@dataclass
class StudyConfig:
    """What the study runs and where it writes."""

    recipes: list[Path]
    """One recipe per method (recipes/study/*.yaml); the file stem names the method."""
    seeds: int = 3
    """Seeds per method: 0 .. seeds-1, passed as `train.seed` (data order, sampling, init RNG)."""
    out: Path = Path("runs/study/results")
    """Where the cells (`<method>/seed<s>/`) and the report go."""
    recipes_dir: Path = Path("recipes/study")
    """The study's recipe folder (task data, tokenizer, warm_start.yaml)."""
    runs: Path = Path("runs/study")
    """Where the init model, the warm start and the base model live."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` overrides for every method run (e.g. `train.steps=4` for a quick check)."""
    warm_overrides: list[str] = field(default_factory=list)
    """`key=value` overrides for the warm start (used only when the base model is built)."""

    @property
    def eval_file(self) -> Path:
        return self.recipes_dir / "data" / "eval.jsonl"


def method_name(recipe: Path) -> str:
    return recipe.stem


def _child(args: list[str], log_path: Path, what: str) -> None:
    """Run `python args...` with its output in `log_path`; RuntimeError naming the log on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as log:
        code = subprocess.run([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{what} failed (exit code {code}); see {log_path}:\n" + "\n".join(tail))
    logger.info("%s done in %.0f s", what, time.perf_counter() - start)


def _write_done(cell: Path, summary: dict) -> None:
    write_text_atomic(cell / DONE, json.dumps(summary, indent=1) + "\n")


def evaluate_cell(model: Path, cell: Path, config: StudyConfig, seed: int) -> None:
    if (cell / "eval" / "sampled" / "results.json").is_file():
        return
    _child(["-m", "megatron_uniapl.study.evaluate", "--model", str(model), "--eval-file", str(config.eval_file),
            "--out", str(cell / "eval"), "--seed", str(seed)], cell / "eval.log", f"evaluation of {cell}")


def run_cell(recipe: Path, seed: int, base: Path, config: StudyConfig) -> Path:
    """Train, evaluate and mark one (method, seed) cell; returns its directory."""
    cell = config.out / method_name(recipe) / f"seed{seed}"
    if (cell / DONE).is_file():
        logger.info("%s: done already", cell)
        return cell
    start = time.perf_counter()
    train_dir = cell / "train"
    _child(["-m", "megatron_uniapl.train", "--config", str(recipe), f"model.hf_dir={base}",
            f"train.seed={seed}", f"logging.run_dir={train_dir}", "logging.wandb_mode=disabled",
            *config.overrides], cell / "train.log", f"training of {cell}")
    evaluate_cell(latest_checkpoint(train_dir), cell, config, seed)
    _write_done(cell, {"method": method_name(recipe), "seed": seed, "recipe": str(recipe),
                       "overrides": config.overrides, "seconds": round(time.perf_counter() - start, 1)})
    return cell


def run_base(base: Path, config: StudyConfig) -> Path:
    """Evaluate the warm start itself (the methods' common step 0), with seed 0."""
    cell = config.out / "base" / "seed0"
    if not (cell / DONE).is_file():
        start = time.perf_counter()
        evaluate_cell(base, cell, config, 0)
        _write_done(cell, {"method": "base", "seed": 0, "seconds": round(time.perf_counter() - start, 1)})
    return cell


def run_study(config: StudyConfig) -> dict:
    """Prepare, run every missing cell, write the report; returns the report's content."""
    from megatron_uniapl.study.report import write_report

    if not config.recipes:
        raise ValueError("no method recipes given (e.g. recipes/study/uniapl.yaml)")
    for recipe in config.recipes:
        if not recipe.is_file():
            raise FileNotFoundError(f"{recipe}: no such recipe")
    if config.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {config.seeds}")
    base = prepare(config.recipes_dir, config.runs, config.warm_overrides)
    run_base(base, config)
    cells = [(r, s) for s in range(config.seeds) for r in config.recipes]
    for i, (recipe, seed) in enumerate(cells, 1):
        logger.info("cell %d/%d: %s, seed %d", i, len(cells), method_name(recipe), seed)
        run_cell(recipe, seed, base, config)
    return write_report(config.out, [method_name(r) for r in config.recipes], config.seeds,
                        config.recipes_dir / "data", base)
