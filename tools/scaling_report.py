#!/usr/bin/env python
"""Tabulate and plot a scaling study: `python tools/scaling_report.py RUN_DIR... [--plot out.png]`.

See megatron_uniapl/scaling/report.py for the columns and formulas.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_uniapl.scaling.report import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
