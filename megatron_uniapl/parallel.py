"""Process groups and Megatron parallel state: one entry point for the trainer, tools and tests.

torch.distributed over NCCL is the distributed engine on GPUs; on a CPU (tests, the demo,
conversion) the same code runs over gloo with Megatron-Core's CPU support applied. A single
process without a launcher gets a world of one on a loopback rendezvous.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket

import torch
import torch.distributed as dist

from megatron_uniapl import cpu_support

logger = logging.getLogger(__name__)

# torchrun's LOCAL_WORLD_SIZE as this process started: vLLM's CPU platform rewrites the variable
# when an engine starts in the process, so it is read once, at import (before any engine).
_LAUNCH_LOCAL_WORLD_SIZE = os.environ.get("LOCAL_WORLD_SIZE")


def launch_nodes(world: int) -> int:
    """The number of nodes this job runs on (the `nodes` metric of scaling reports).

    torchrun starts one agent per node and tells each worker their count (GROUP_WORLD_SIZE);
    without it, `world` / the launcher's LOCAL_WORLD_SIZE as set at process start; else 1.
    """
    groups = os.environ.get("GROUP_WORLD_SIZE", "")
    if groups.isdigit() and int(groups) >= 1:
        return int(groups)
    local = _LAUNCH_LOCAL_WORLD_SIZE or ""
    if local.isdigit() and int(local) >= 1:
        return max(1, world // int(local))
    return 1


def free_port() -> int:
    """A free TCP port on the loopback interface, for single-process or spawned worlds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(timeout_s: float = 600.0, device: str = "auto") -> None:
    """Join (or create) the default process group: NCCL with CUDA, gloo without.

    Under torchrun/srun the env:// variables are used; otherwise a world of one is created.
    `device="cuda"` refuses to start (DeviceError naming what is missing) where "auto" would
    fall back to gloo and the CPU support.
    """
    if dist.is_initialized():
        return
    if device == "cuda":
        from megatron_uniapl.device import require_cuda

        require_cuda("train.device=cuda")
    cpu = cpu_support.enable()
    if cpu:
        from megatron_uniapl.device import cuda_status

        logger.info("no usable CUDA (%s): running on the CPU over gloo", cuda_status().problem)
    backend = "gloo" if cpu else "nccl"
    timeout = datetime.timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if not cpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=timeout)
        return
    # No launcher: a world of one on a fresh loopback port, passed explicitly rather than through
    # RANK/MASTER_PORT variables, so that child processes (tools, tests) never mistake this
    # process's world for a launch of their own.
    if not cpu:
        torch.cuda.set_device(0)
    dist.init_process_group(
        backend=backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, timeout=timeout
    )

def initialize(
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    virtual_pipeline_stages: int | None = None,
    context_parallel: int = 1,
    seed: int = 1234,
    device: str = "auto",
    timeout_s: float = 600.0,
) -> None:
    """Process group + Megatron model-parallel groups + model-parallel RNG, in that order.
    `device`: "auto" or "cuda" (no CPU fallback), as in `init_process_group`; `timeout_s`: of
    every collective (an existing default process group keeps its own)."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    init_process_group(timeout_s, device=device)
    world = dist.get_world_size()
    model_parallel = tensor_parallel * pipeline_parallel * context_parallel
    if world % model_parallel:
        raise ValueError(
            f"world size {world} is not a multiple of tensor_parallel*pipeline_parallel*context_parallel={model_parallel}"
        )
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
        virtual_pipeline_model_parallel_size=virtual_pipeline_stages,
        context_parallel_size=context_parallel,
    )
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    """Tear down Megatron's groups and the default process group."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


class WorkerError(RuntimeError):
    """A spawned worker failed; the message is the worker's own error line."""


def _spawned(local_rank: int, world_size: int, port: int, fn, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    # Spawned processes start with no logging configuration: rank 0 reports, the others warn.
    logging.basicConfig(
        level=logging.INFO if local_rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{local_rank}] %(name)s: %(message)s",
    )
    fn(*args)


def run_world(fn, world_size: int, *args) -> None:
    """Run `fn(*args)` on `world_size` ranks.

    Under a launcher (torchrun/srun set WORLD_SIZE) the current process is already one rank: the
    world must have the requested size and `fn` runs here. Otherwise `world_size` local processes
    are spawned (world of 1: in this process). Worker failures raise `WorkerError` with the
    worker's final error line, so CLIs can print it plainly.
    """
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        launched = int(os.environ["WORLD_SIZE"])
        if launched != world_size:
            raise ValueError(f"launched with WORLD_SIZE={launched} but this job needs {world_size} ranks")
        fn(*args)
        return
    if world_size == 1:
        fn(*args)
        return
    import torch.multiprocessing as mp

    try:
        mp.start_processes(
            _spawned, args=(world_size, free_port(), fn, args), nprocs=world_size, start_method="spawn"
        )
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise WorkerError(lines[-1] if lines else str(exc)) from None
