"""The one-GPU check (`python tools/gpu_check.py`): installed versions, `pip check`, and short runs
of the real GPU paths (trainer, vLLM sleep mode and weight sync, Transformer Engine, FP8,
conversion, offload, the model benchmark), each in its own process with a time limit. What a
machine cannot run (no CUDA, no GPU build of vLLM, no Transformer Engine, one GPU) is skipped
with the reason, so the same command serves a full GPU environment, a bare GPU image with only
torch and megatron-core, and a CPU machine.

    environment.py   versions, pip check, what this machine offers (pure parts + probes)
    registry.py      the checks, their needs and time limits; the runner and its table
    model_checks.py  checks that need only torch + megatron-core on a GPU
    stack_checks.py  checks of the full stack (trainer, vLLM, TE, conversion, pytest -m gpu)
    one.py           runs one check in a fresh process and reports it as one JSON line
"""
