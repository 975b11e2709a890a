#!/usr/bin/env python
"""The reproduction study: every method x seed on the study task, evaluated and reported.

    python tools/study.py recipes/study/{sft,grpo,sft_then_grpo,chord,a_grpo,uniapl}.yaml --seeds 3

See megatron_uniapl/study/cli.py (and --help) and docs/study.md.
"""

from __future__ import annotations

import sys

from megatron_uniapl.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
