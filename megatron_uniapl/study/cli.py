"""`tools/study.py`: the study driver's command line (thin: parsing, logging, exit codes)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from megatron_uniapl.study.driver import StudyConfig, run_study

logger = logging.getLogger("study")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="run the UniAPL reproduction study (docs/study.md)")
    parser.add_argument("recipes", type=Path, nargs="+", help="one recipe per method (recipes/study/*.yaml)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (0 .. N-1)")
    parser.add_argument("--out", type=Path, default=Path("runs/study/results"), help="cells and report")
    parser.add_argument("--runs", type=Path, default=Path("runs/study"), help="init model, warm start, base model")
    parser.add_argument("--recipes-dir", type=Path, default=Path("recipes/study"),
                        help="the study folder: data/, tokenizer/, warm_start.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every method run (repeatable), e.g. train.steps=4")
    parser.add_argument("--warm-set", dest="warm_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for the warm start (repeatable; only when the base model is built)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """0: report written; 2: bad arguments; 1: a run failed (its log is named)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = StudyConfig(recipes=args.recipes, seeds=args.seeds, out=args.out, recipes_dir=args.recipes_dir,
                         runs=args.runs, overrides=args.overrides, warm_overrides=args.warm_overrides)
    try:
        run_study(config)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    except RuntimeError as err:
        logger.error("%s", err)
        return 1
    logger.info("results: %s", config.out / "results.md")
    return 0
