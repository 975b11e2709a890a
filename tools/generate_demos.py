#!/usr/bin/env python
"""Expert demonstrations from a teacher model over a prompt file; resumable, optionally filtered.

    python tools/generate_demos.py --teacher HF_DIR --prompts prompts.jsonl --out demos.jsonl \
        [--filter strict --n 4]
    torchrun --nproc-per-node 8 tools/generate_demos.py --tp 8 ...   # teacher with its own TP

See megatron_uniapl/teacher/generate.py (and --help).
"""

from __future__ import annotations

import sys

from megatron_uniapl.teacher.generate import main

if __name__ == "__main__":
    sys.exit(main())
