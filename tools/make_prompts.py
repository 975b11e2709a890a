#!/usr/bin/env python
"""Verifiable RL prompts from a list of instructions, decontaminated against evaluation sets.

    python tools/make_prompts.py --instructions requests.jsonl --out data/prompts.jsonl \
        [--eval-set asset:ifeval] [--max-constraints 3] [--weight TYPE=W ...]

See megatron_uniapl/dataprep/make_prompts.py (and --help).
"""

import sys

from megatron_uniapl.dataprep.make_prompts import main

if __name__ == "__main__":
    sys.exit(main())
