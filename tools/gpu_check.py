#!/usr/bin/env python
"""Check this machine's GPU environment in one command: `python tools/gpu_check.py [--only NAME ...]`.

Prints the installed versions and `pip check`, runs the GPU checks this machine can run and says
why it skipped the others (megatron_uniapl/gpucheck). Exit status 0 unless a check failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_uniapl.gpucheck.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
