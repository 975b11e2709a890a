"""`python -m megatron_uniapl.config RECIPE [overrides]`: print the resolved configuration."""

import sys

from megatron_uniapl.config.loader import main

if __name__ == "__main__":
    sys.exit(main())
