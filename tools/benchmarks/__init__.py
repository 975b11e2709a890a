"""Benchmarks: each module has `main(argv)` and prints ratios against a baseline run in the same
process. `tools/bench.py NAME ...` dispatches to `benchmarks.NAME`."""
