# The two commands a new user needs: `make demo` runs the main job on the CPU with a tiny model,
# `make test` runs the CPU test suite. Both create or reuse .venv (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-gpu gpu-check demo test test-fast test-slow bench clean

setup:
	@bash scripts/setup_env.sh $(VENV)

# The GPU environment (.venv-gpu, separate from the CPU .venv): the pinned stack of
# requirements/gpu.lock with Transformer Engine compiled against its torch. Then `make gpu-check`.
GPU_VENV ?= .venv-gpu
setup-gpu:
	@bash scripts/setup_gpu_env.sh $(GPU_VENV)

gpu-check:
	$(GPU_VENV)/bin/python tools/gpu_check.py $(ARGS)

demo: setup
	$(PY) -m megatron_uniapl.train --config recipes/tiny_cpu.yaml $(ARGS)

# Fast in-process tests first, then the multi-process and engine tests, so a broken basic
# fails in seconds.
test: setup
	$(PY) -m pytest -m "not slow" -q
	$(PY) -m pytest -m "slow" -q --durations=30

bench: setup
	$(PY) tools/bench.py

clean:
	rm -rf runs .pytest_cache
