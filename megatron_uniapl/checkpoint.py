"""Training checkpoints: Megatron distributed checkpoints plus the full resume state, atomic.

Layout under `<checkpoint_dir>`:

    iter_0000020/
      weights/            dist_checkpointing: model (+ optimizer, + discriminator) sharded state
      common.pt           rank 0: step, LR schedule, data position, config, anything small
      rng/rank{r}.pt      each rank's RNG streams (torch, CUDA, Megatron tracker, python, numpy)
      rng/state_rank{r}.pt  optional per-rank state (e.g. the co-trained discriminator's shard)
      uniapl_train.json   written last: marks the directory complete
    latest                the name of the newest complete iteration, replaced atomically

A save goes to `iter_XXXXXXX.partial-<token>` and is renamed into place only when every rank has
written its part and rank 0 has written the marker; `latest` is updated after that, and old
iterations beyond `keep_last` are deleted last. A crash at any point leaves `latest` naming a
complete checkpoint (or no `latest` at all), never a half-written one; leftovers are cleaned at
the next save.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_uniapl.convert.mcore_checkpoint import new_token

logger = logging.getLogger(__name__)

FORMAT = "megatron_uniapl.train/1"
MARKER = "uniapl_train.json"
LATEST = "latest"
_ITER = re.compile(r"^iter_(\d{7})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (incomplete, from another model, unreadable)."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def iteration_name(step: int) -> str:
    return f"iter_{step:07d}"


def capture_rng() -> dict:
    """This rank's random streams, so that a resumed run draws exactly what the original would."""
    from megatron.core.tensor_parallel import random as mp_random

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    tracker = mp_random.get_cuda_rng_tracker()
    state["tracker"] = tracker.get_states() if tracker.is_initialized() else None
    return state


def restore_rng(state: dict) -> None:
    from megatron.core.tensor_parallel import random as mp_random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("tracker") is not None:
        mp_random.get_cuda_rng_tracker().set_states(state["tracker"])


def complete_iterations(root: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    out = []
    root = Path(root)
    if root.is_dir():
        for child in root.iterdir():
            m = _ITER.match(child.name)
            if m and (child / MARKER).is_file():
                out.append((int(m.group(1)), child))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint `latest` names; if that file is missing or stale, the newest complete one."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if (target / MARKER).is_file():
            return target
        logger.warning("%s names %s, which is not a complete checkpoint; using the newest complete one", pointer, target)
    done = complete_iterations(root)
    return done[-1][1] if done else None


def _clean_leftovers(root: Path) -> None:
    for child in root.glob("iter_*.partial-*"):
        logger.warning("removing an interrupted save: %s", child)
        shutil.rmtree(child, ignore_errors=True)


def save_checkpoint(
    root: str | Path, step: int, sharded: dict, common: dict, keep_last: int | None = None, meta: dict | None = None,
    write_extra=None, per_rank: dict | None = None,
) -> Path:
    """Collective. `sharded`: a Megatron sharded state dict (model, optimizer, ...); `common`:
    small picklable state saved once by rank 0; `write_extra(stage_dir)`: rank 0 writes more files
    into the checkpoint before it is marked complete; `per_rank`: state each rank saves for itself
    (e.g. a tensor-parallel shard of a small model), read back by `load_rank_state`. Returns the
    published directory."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    token = new_token()
    final = root / iteration_name(step)
    stage = root / f"{final.name}.partial-{token}"
    start = time.time()
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(root)
        (stage / "weights").mkdir(parents=True)
        (stage / "rng").mkdir()
    _barrier()
    dist_checkpointing.save(sharded, str(stage / "weights"))
    torch.save(capture_rng(), stage / "rng" / f"rank{_rank()}.pt")
    if per_rank is not None:
        torch.save(per_rank, stage / "rng" / f"state_rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        torch.save(common, stage / "common.pt")
        if write_extra is not None:
            write_extra(stage)
        marker = {"format": FORMAT, "step": step, "world_size": dist.get_world_size() if dist.is_initialized() else 1, **(meta or {})}
        (stage / MARKER).write_text(json.dumps(marker, indent=2))
        if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(stage, final)
        tmp = root / f"{LATEST}.tmp-{token}"
        tmp.write_text(final.name + "\n")
        os.replace(tmp, root / LATEST)
        if keep_last:
            for _, old in complete_iterations(root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s in %.1f s", final, time.time() - start)
    _barrier()
    return final


def load_checkpoint(path: str | Path, sharded: dict, restore_rng_state: bool = True) -> tuple[dict, dict, dict]:
    """Collective. Loads `path` (an iteration directory) into the shapes of `sharded`.

    Returns (loaded sharded state, common state, marker). RNG streams are restored when the
    world size matches the one that saved (otherwise a warning: streams cannot be mapped)."""
    from megatron.core import dist_checkpointing

    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path}: no {MARKER}; not a complete checkpoint")
    marker = json.loads((path / MARKER).read_text())
    if marker.get("format") != FORMAT:
        raise CheckpointError(f"{path / MARKER}: format {marker.get('format')!r}, expected {FORMAT!r}")
    state = dist_checkpointing.load(sharded, str(path / "weights"))
    common = torch.load(path / "common.pt", weights_only=False)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rng_file = path / "rng" / f"rank{_rank()}.pt"
    if restore_rng_state:
        if marker.get("world_size") == world and rng_file.is_file():
            restore_rng(torch.load(rng_file, weights_only=False))
        else:
            logger.warning("RNG state not restored: saved with world size %s, running with %s", marker.get("world_size"), world)
    return state, common, marker


def load_rank_state(path: str | Path) -> dict | None:
    """This rank's `per_rank` state of a checkpoint (None when it saved none)."""
    file = Path(path) / "rng" / f"state_rank{_rank()}.pt"
    return torch.load(file, weights_only=False) if file.is_file() else None


def model_sharded_state(model_chunks: list) -> dict:
    """The model part of a sharded state dict (DDP wrappers unwrapped; one key per chunk)."""
    modules = [getattr(chunk, "module", chunk) for chunk in model_chunks]
    if len(modules) == 1:
        return modules[0].sharded_state_dict()
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(modules)}


# "fully_reshardable": the distributed optimizer's state is stored per parameter, like a plain
# optimizer's, so a run can resume at another TP/PP/DP layout.
_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def _ensure_optimizer_state(optimizer) -> None:
    """Give a never-stepped optimizer the state tensors a checkpoint will be loaded into.

    Without Apex or Transformer Engine, Megatron's DistributedOptimizer reads one common 'step'
    from torch Adam's per-parameter state to describe itself, and a fresh optimizer has none.
    Zeros of the right shapes (and step 0) are what Adam's own lazy init would create; the
    loaded checkpoint then overwrites all of it. Returns the states given a placeholder 'step',
    which must be removed again before loading (the loader copies every tensor it finds).
    """
    added = []
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        init = getattr(opt, "init_state_fn", None)
        inner = getattr(opt, "optimizer", None)
        if init is None or inner is None:
            continue
        init(inner, getattr(opt, "config", None))
        for group in inner.param_groups:
            for p in group["params"]:
                if "step" not in inner.state[p]:
                    inner.state[p]["step"] = torch.tensor(0.0)
                    added.append(inner.state[p])
    return added


def training_sharded_state(model_chunks: list, optimizer, is_loading: bool = False) -> dict:
    """{"model": ..., "optimizer": ...} for `save_checkpoint` / `load_checkpoint`."""
    model_sd = model_sharded_state(model_chunks)
    out = {"model": model_sd}
    if optimizer is not None:
        added = _ensure_optimizer_state(optimizer) if is_loading else []
        out["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=_OPTIMIZER_METADATA)
        for state in added:
            del state["step"]
    return out


def apply_training_state(state: dict, model_chunks: list, optimizer) -> None:
    """Load what `load_checkpoint` returned into the model chunks and the optimizer."""
    modules = [getattr(chunk, "module", chunk) for chunk in model_chunks]
    if len(modules) == 1:
        modules[0].load_state_dict(state["model"], strict=True)
    else:
        for i, m in enumerate(modules):
            m.load_state_dict(state["model"][f"model{i}"], strict=True)
    if optimizer is not None and "optimizer" in state:
        # With float32 parameters the distributed optimizer's main params are views of the
        # model's (grad-requiring) parameters; Megatron copies into them in place.
        with torch.no_grad():
            optimizer.load_state_dict(state["optimizer"])
        _restore_adam_steps(optimizer, state["optimizer"])


def _restore_adam_steps(optimizer, saved: dict) -> None:
    """Put torch Adam's per-parameter 'step' back after a distributed-optimizer load.

    Without Apex/TE, Megatron saves the common step in the param groups but its parameter-state
    loader leaves torch Adam's per-parameter step at the placeholder (seen with megatron-core
    0.19.2): the bias correction of the next update would then be wrong.
    """
    subs = getattr(optimizer, "chained_optimizers", [optimizer])
    # A chain of several optimizers saves one state per member, keyed by position.
    saved_list = [saved] if len(subs) == 1 else [saved.get(i) for i in range(len(subs))]
    for opt, sub_saved in zip(subs, saved_list):
        if not (isinstance(sub_saved, dict) and "param_state" in sub_saved and "optimizer" in sub_saved):
            continue  # not a distributed-optimizer state
        steps = {g.get("step") for g in sub_saved["optimizer"]["param_groups"]} - {None}
        if len(steps) != 1:
            continue
        step = torch.tensor(float(steps.pop()))
        for group in opt.optimizer.param_groups:
            for p in group["params"]:
                if "step" in opt.optimizer.state[p]:
                    opt.optimizer.state[p]["step"] = step.clone()
