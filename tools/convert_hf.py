#!/usr/bin/env python
"""Convert Qwen3 checkpoints between Hugging Face and Megatron-Core formats (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_uniapl.convert.tool import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
