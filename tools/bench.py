#!/usr/bin/env python
"""Run one benchmark: `python tools/bench.py NAME [args]` (NAME is a module of tools/benchmarks).

With no NAME, runs every benchmark with its CPU defaults.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def available() -> list[str]:
    import benchmarks as bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__ + "\nbenchmarks: " + ", ".join(names))
        return 0
    if not argv:
        for name in names:
            rc = importlib.import_module(f"benchmarks.{name}").main([])
            if rc:
                return rc
        return 0
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"benchmarks.{name}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
