"""Run one GPU check in this process: `python -m megatron_uniapl.gpucheck.one NAME WORKDIR`.

Logs go to stderr; the last stdout line is `RESULT {"status": ..., "detail": ...}`, which the
runner in `registry` reads.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path


def describe(figures: dict) -> str:
    """`key=value` pairs of a check's figures, floats in 3 significant digits. Pure."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())


def main(argv: list[str] | None = None) -> int:
    from megatron_uniapl.gpucheck.registry import CHECKS

    name, workdir = (argv if argv is not None else sys.argv[1:])[:2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    check = next(c for c in CHECKS if c.name == name)
    fn = getattr(importlib.import_module(f"megatron_uniapl.gpucheck.{check.module}"), name)
    try:
        figures = fn(Path(workdir))
        result = {"status": "ok", "detail": describe(figures)}
    except Exception as err:  # noqa: BLE001  (the check's verdict, reported in the table)
        logging.getLogger(__name__).exception("check %s failed", name)
        first = str(err).splitlines()[0] if str(err) else ""
        result = {"status": "FAILED", "detail": f"{type(err).__name__}: {first}"[:300]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
