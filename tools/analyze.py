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

from megatron_uniapl.eval.analyze import main

if __name__ == "__main__":
    sys.exit(main())
