"""Rehearse a shipped recipe in its own parallel layout (see megatron_uniapl/rehearsal/run.py).

    python tools/rehearse.py recipes/qwen3_4b.yaml                                  # CPU, shrunk
    torchrun --nproc-per-node 8 tools/rehearse.py recipes/qwen3_4b.yaml --full-size  # GPU smoke run
"""

import sys

from megatron_uniapl.rehearsal.run import main

if __name__ == "__main__":
    sys.exit(main())
