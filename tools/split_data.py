#!/usr/bin/env python
"""Split prompts and teacher outputs into demos.jsonl, rl_prompts.jsonl (with references),
an optional held-out eval.jsonl, and one manifest.json.

    python tools/split_data.py --prompts prompts.jsonl --teacher-out teacher.jsonl --out-dir $UNIAPL_DATA

See megatron_uniapl/dataprep/split.py (and --help).
"""

import sys

from megatron_uniapl.dataprep.split import main

if __name__ == "__main__":
    sys.exit(main())
