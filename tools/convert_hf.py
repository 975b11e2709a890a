#!/usr/bin/env python
"""Convert Qwen3 checkpoints between Hugging Face and Megatron-Core formats (see --help)."""

import sys

from megatron_uniapl.convert.tool import main

if __name__ == "__main__":
    sys.exit(main())
