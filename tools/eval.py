#!/usr/bin/env python
"""IFEval accuracy of a model (HF directory or Megatron checkpoint) through the rollout engine.

    python tools/eval.py --model DIR --eval-file ifeval.jsonl --out results/ [--limit N]

See megatron_uniapl/eval/run.py (and --help).
"""

from __future__ import annotations

import sys

from megatron_uniapl.eval.run import main

if __name__ == "__main__":
    sys.exit(main())
