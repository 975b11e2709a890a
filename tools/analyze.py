#!/usr/bin/env python
"""Compare policy and expert responses: length and log-prob distributions, distances, plots.

    python tools/analyze.py --policy policy.jsonl --expert expert.jsonl --out analysis/ \
        [--model HF_MODEL_DIR]

Both files are JSONL in the demonstration format (`prompt` or `messages`, `response`, optional
`id`); the outputs of the other tools are accepted as written: `responses.jsonl` of
tools/eval.py as the policy side, the `--out` file of tools/generate_demos.py as the expert side
(an eval response that is blank is refused, as in any demonstration file). See
megatron_uniapl/eval/analyze.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_uniapl.eval.analyze import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
