#!/usr/bin/env bash
# Create (or reuse) the GPU environment in .venv-gpu: the pinned stack of requirements/gpu.lock
# (torch 2.13.0 for CUDA 13.0, vLLM 0.32.0, megatron-core 0.19.2, Transformer Engine 2.19.0),
# Transformer Engine's PyTorch extension compiled against that torch, and this project on top.
# It is separate from .venv (the CPU test environment with the CPU build of vLLM): the two vLLM
# builds cannot share an environment. Safe to run twice: a stamp keyed on the pins makes the
# second run a no-op. Ends with `pip check` and an import check.
#
# Needs: Linux x86_64, a Python 3.12, a C++ compiler (g++ >= 9) for the extension, network
# access to the package index. Running it needs an NVIDIA driver >= 580 (CUDA 13); installing
# does not (nothing here touches a GPU).
#
# Usage: scripts/setup_gpu_env.sh [VENV_DIR]      (default .venv-gpu)
# Environment: UNIAPL_PYTHON (the interpreter), MAX_JOBS (parallel compile jobs, default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-gpu}
source scripts/find_python.sh   # find_python: a Python 3.12 on this machine

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "error: requirements/gpu.lock is resolved for Linux x86_64; this is $(uname -s)-$(uname -m)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! PY=$(find_python); then
        echo "error: no Python 3.12 found (see scripts/setup_env.sh for ways to get one, or set UNIAPL_PYTHON)" >&2
        exit 1
    fi
    echo "setup-gpu: creating $VENV with $PY ($("$PY" --version))"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' ||
    { echo "error: $VENV is not a Python 3.12 environment (the lock is for 3.12); remove it and re-run" >&2; exit 1; }

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$VENV/.uniapl-gpu-installed"
key=$(cat pyproject.toml requirements/gpu.lock requirements/gpu-build.in scripts/setup_gpu_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    echo "setup-gpu: $VENV is up to date"
    exit 0
fi

echo "setup-gpu: installing the pinned GPU stack into $VENV (first run: about 8 GB of wheels)"
"${PIP[@]}" install -q --upgrade "pip>=25"
# Every package is pinned in the lock, so nothing is resolved here (--no-deps); `pip check` at
# the end proves the set complete and consistent.
"${PIP[@]}" install -q --no-deps -r requirements/gpu.lock

# Transformer Engine's PyTorch extension is only published as source. Built without build
# isolation it compiles against the torch installed above (an isolated build would fetch the
# newest torch and produce an extension that fails to load). Headers and nvcc come from the CUDA
# 13 wheels in the lock, so no system CUDA toolkit is needed; only the host C++ compiler.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
command -v g++ >/dev/null || command -v c++ >/dev/null ||
    { echo "error: no C++ compiler (g++) found; Transformer Engine's PyTorch extension is compiled here" >&2; exit 1; }
echo "setup-gpu: compiling transformer-engine-torch against torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') (several minutes)"
PATH="$site/nvidia/cu13/bin:$VENV/bin:$PATH" NVTE_BUILD_USE_NVIDIA_WHEELS=1 NVTE_FRAMEWORK=pytorch \
    MAX_JOBS="${MAX_JOBS:-4}" "${PIP[@]}" install -q --no-build-isolation --no-deps -r requirements/gpu-build.in

"${PIP[@]}" install -q --no-deps -e .
echo "setup-gpu: pip check"
"${PIP[@]}" check
# Importable without a GPU: torch, megatron-core, vLLM. Transformer Engine loads the CUDA driver
# library when imported, so on a machine without the driver it is only reported.
"$VENV/bin/python" -c 'import torch, megatron.core, vllm; print(f"setup-gpu: torch {torch.__version__} (CUDA {torch.version.cuda}), vllm {vllm.__version__}, megatron-core {megatron.core.__version__}")'
"$VENV/bin/python" -c 'import transformer_engine.pytorch as te; print("setup-gpu: transformer_engine", te.__version__ if hasattr(te, "__version__") else "imported")' ||
    echo "setup-gpu: note: transformer_engine.pytorch did not import here (expected without an NVIDIA driver); run tools/gpu_check.py on a GPU machine"
echo "$key" > "$stamp"
echo "setup-gpu: done; check the GPU with: $VENV/bin/python tools/gpu_check.py"
