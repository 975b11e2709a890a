#!/usr/bin/env python
"""Compare policy and expert responses: length and log-prob distributions, distances, plots.

    python tools/analyze.py --policy policy.jsonl --expert expert.jsonl --out analysis/ \
        [--model HF_MODEL_DIR]

See megatron_uniapl/eval/analyze.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_uniapl.eval.analyze import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
