"""Rehearse a shipped recipe: run it in its own layout, save, resume, and report against thresholds.

    python tools/rehearse.py recipes/qwen3_4b.yaml [section.field=value ...]          # CPU, shrunk
    torchrun --nproc-per-node 8 tools/rehearse.py recipes/qwen3_4b.yaml --full-size   # GPU smoke run

On a CPU the recipe is shrunk (`shrink.SHRINKABLE`, every change printed) and its ranks are
spawned here. Two runs of the real training loop follow in the same processes: the first trains
3 steps with a checkpoint after step 2; the second builds everything anew from that checkpoint
and trains step 3 again, which must reproduce the first run's step 3 (losses, rewards, gradient
norm). Then one table: what was
shrunk, the layout, every step, and the checks with their figures and limits.

`--full-size` (under torchrun on the recipe's GPUs) changes only length and output
(`shrink.FULL_SIZE_SHRINKABLE`): the cluster user's first job, which also reports memory per
phase and the weight-sync time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.config import ConfigError, RunConfig, load_config
from megatron_uniapl.rehearsal import report, shrink

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TOY_DATA = REPO / "recipes" / "data"
CLUSTER_VARS = ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS")


@dataclass
class Outcome:
    """What a rehearsal produced."""

    plan: shrink.Plan
    reference: dict[int, dict]
    """Metrics per step of the 3-step run."""
    resumed: dict[int, dict]
    """Metrics per step of the run resumed from the step-2 checkpoint."""
    seconds: dict[str, float]
    """Wall time of each phase."""
    checks: list[report.Check]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _rank_main(first: RunConfig, second: RunConfig) -> None:
    """One rank of both runs (spawned, or this process under torchrun), in one process: the
    second run builds every part anew from the checkpoint (model, optimizer, engine, streams),
    as a resubmitted job does, without paying the imports and start-up a second time.

    The training loop ends by destroying its process group, so the second run needs a fresh
    rendezvous: rank 0 picks a free port (on its host, MASTER_ADDR) before the first run and
    the second run's store is created there, never reusing the first one's keys."""
    import torch.distributed as dist

    from megatron_uniapl import parallel
    from megatron_uniapl.train import train

    parallel.init_process_group(timeout_s=first.train.process_group_timeout_s)
    if dist.get_rank() == 0:  # outputs of an earlier rehearsal in the same place
        for stale in (first.logging.run_dir, second.logging.run_dir):
            shutil.rmtree(stale, ignore_errors=True)
    box = [_free_port() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    train(first)
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.update(MASTER_PORT=str(box[0]), TORCHELASTIC_USE_AGENT_STORE="False")
    train(second)


def read_metrics(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "metrics.jsonl"
    rows: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["step"]] = row
    return rows


def prepare(recipe: str, overrides: list[str], out_dir: Path, max_ranks: int, full_size: bool,
            float32: bool = False) -> shrink.Plan:
    """Load the recipe through the real loader and shrink it (or only shorten it, full size)."""
    for name in CLUSTER_VARS:  # placeholders for the paths a CPU rehearsal replaces anyway
        if not full_size:
            os.environ.setdefault(name, str(out_dir / "cluster" / name.lower()))
    config = load_config(recipe, overrides)
    if full_size:
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1")) if not dist.is_initialized() else dist.get_world_size()
        return shrink.full_size(config, str(out_dir / "run"), world)
    from megatron_uniapl.rehearsal import assets

    arch = assets.recipe_arch(config)
    m = config.model
    _, pp, _, _ = shrink.reduce_layout(m.tensor_parallel, m.pipeline_parallel,
                                       max(1, config.plan.world // m.model_parallel_size), max_ranks)
    stages = pp * (m.virtual_pipeline_stages or 1) if pp > 1 else 1  # the policy gets 2 layers per stage
    dtype = "float32" if float32 else m.dtype
    policy = assets.make_policy(out_dir / f"policy_{stages}stages_{dtype}", arch, stages, dtype, config.train.seed)
    classifier = assets.make_classifier(out_dir / "classifier", config.train.seed) if config.discriminator.frozen else None
    return shrink.shrink(config, str(out_dir / "run"), model_dir=str(policy),
                         classifier_dir=None if classifier is None else str(classifier),
                         data_dir=str(TOY_DATA), max_ranks=max_ranks, float32=float32)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the spawned ranks)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _launch(first: RunConfig, second: RunConfig, world: int) -> None:
    from megatron_uniapl import parallel

    parallel.run_world(_rank_main, world, first, second)


def rehearse(recipe: str, overrides: list[str], out_dir: Path, max_ranks: int = 4, full_size: bool = False,
             float32: bool = False) -> Outcome:
    """Shrink, run 3 steps, resume step 3 from the step-2 checkpoint, check. Raises ConfigError
    for a recipe that does not load; a failing rank raises `parallel.WorkerError`."""
    out_dir = Path(out_dir).resolve()
    plan = prepare(recipe, overrides, out_dir, max_ranks, full_size, float32)
    run_dir = Path(plan.config.logging.run_dir)
    start, cpu = time.perf_counter(), _cpu_seconds()
    _launch(plan.config, _resume_config(plan.config, run_dir, out_dir / "resume"), plan.world)
    seconds = {"wall (3 steps, then step 3 again from the step-2 checkpoint; start-up included)":
               time.perf_counter() - start, "CPU, all ranks": _cpu_seconds() - cpu}
    reference, resumed = read_metrics(run_dir), read_metrics(out_dir / "resume")
    checks = report.checks(plan.config, reference, resumed, full_size)
    return Outcome(plan, reference, resumed, seconds, checks)


def _resume_config(config: RunConfig, run_dir: Path, resume_dir: Path) -> RunConfig:
    from dataclasses import replace

    checkpoint = run_dir / "checkpoints" / f"iter_{shrink.CHECKPOINT_AT:07d}"
    return replace(config, logging=replace(config.logging, run_dir=str(resume_dir)),
                   checkpoint=replace(config.checkpoint, resume=str(checkpoint)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rehearse a shipped recipe in its own parallel layout")
    parser.add_argument("recipe", help="recipes/*.yaml")
    parser.add_argument("overrides", nargs="*", help="section.field=value, applied to the recipe first")
    parser.add_argument("--out", default=None, help="output directory (default: runs/rehearse/<recipe name>)")
    parser.add_argument("--max-ranks", type=int, default=4, help="most CPU processes to start (default 4)")
    parser.add_argument("--float32", action="store_true",
                        help="CPU: train and generate in float32 (bf16 GEMMs are emulated on CPUs without "
                             "AVX-512 BF16/AMX, ~25x slower)")
    parser.add_argument("--full-size", action="store_true",
                        help="no shrinking: the recipe's model and batches on its GPUs, under torchrun")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out or f"runs/rehearse/{Path(args.recipe).stem}")
    from megatron_uniapl.parallel import WorkerError

    try:
        outcome = rehearse(args.recipe, args.overrides, out, args.max_ranks, args.full_size, args.float32)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkerError as err:
        print(f"rehearsal failed: a rank stopped with: {err}", file=sys.stderr)
        return 1
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        print(report.render(outcome))
    return 0 if outcome.passed else 1
