"""Which checkpoint a run continues from, whether it fits the run, and saving/restoring the run.

The run's resumable parts are named `Stateful` objects (`Runtime.parts()` once per run,
`Runtime.rank_parts()` per rank); a save stores `{name: part.state_dict()}` and a resume hands
each part its entry back. What cannot be mapped onto the current run is refused with the field
that differs, before any weights are read (`check_compatible` reads only the marker, so the
pre-flight check runs it before process groups exist):
- another model architecture (hidden size, layers, ...);
- other optimizer settings: Megatron restores the learning-rate schedule and the Adam
  parameter groups from the checkpoint, so a changed `optimizer.*` would either be silently
  ignored or fail deep in the optimizer ("Could not find parameter group");
- data files with another number of records (the data position would not reproduce the run).
A checkpoint whose files cannot be read (truncated, corrupt, refused) is moved aside and the
next newest is tried, loudly; with an explicit `checkpoint.resume=PATH` there is no fallback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from megatron_uniapl.checkpoint import collective, layout
from megatron_uniapl.checkpoint.layout import CheckpointError, UnreadableCheckpointError
from megatron_uniapl.checkpoint.state import read_json
from megatron_uniapl.config.yaml_io import to_data

logger = logging.getLogger(__name__)

UNCHECKED_OPTIMIZER_FIELDS = ("clip_grad",)
"""Optimizer settings a resume may change: read at each step, not part of the saved state."""


def marker_meta(config, arch) -> dict:
    """What the marker records about the run, for `check_compatible`."""
    m = config.model
    return {
        "run": config.name,
        "model": dataclasses.asdict(arch),
        "optimizer": to_data(config.optimizer),
        "train_steps": config.train.steps,
        "layout": {"tensor_parallel": m.tensor_parallel, "pipeline_parallel": m.pipeline_parallel,
                   "virtual_pipeline_stages": m.virtual_pipeline_stages, "context_parallel": m.context_parallel},
    }


def candidates(config) -> list[Path]:
    """Checkpoints to try, in order, for `checkpoint.resume` (auto / none / a path)."""
    mode, root = config.checkpoint.resume, config.checkpoint_dir
    if mode == "none":
        if layout.complete_iterations(root):
            raise CheckpointError(
                f"checkpoint.resume=none but {root} already holds checkpoints; use resume=auto to "
                f"continue, or another logging.run_dir / checkpoint.dir")
        return []
    if mode == "auto":
        return layout.resume_candidates(root)
    path = Path(mode)
    if not (path / layout.MARKER).is_file():
        raise CheckpointError(f"checkpoint.resume={mode}: not a complete training checkpoint (no {layout.MARKER})")
    return [path]


def _differences(saved: dict, now: dict, prefix: str, skip=()) -> list[str]:
    keys = sorted((set(saved) | set(now)) - set(skip))
    return [f"{prefix}{k}={saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
            for k in keys if saved.get(k) != now.get(k)]


def check_compatible(path: Path, marker: dict, config, arch) -> None:
    """CheckpointError naming the first fields that differ between the checkpoint and this run."""
    if arch is not None and "model" in marker:
        diff = _differences(marker["model"], dataclasses.asdict(arch), "")
        if diff:
            raise CheckpointError(
                f"{path} holds another model than model.hf_dir={config.model.hf_dir} "
                f"({'; '.join(diff[:3])}); resume with the model it was trained from, or use another "
                f"checkpoint.dir")
    saved = marker.get("optimizer")
    if saved is not None:
        diff = _differences(saved, to_data(config.optimizer), "optimizer.", UNCHECKED_OPTIMIZER_FIELDS)
        if diff:
            raise CheckpointError(
                f"{path} was saved with other optimizer settings ({'; '.join(diff[:3])}); a resumed run "
                f"keeps the settings it was saved with: restore them, or start a new run from these "
                f"weights (model.init_checkpoint={path}, another logging.run_dir)")
    steps = marker.get("train_steps")
    if steps is not None and steps != config.train.steps and config.optimizer.decay != "constant":
        logger.warning("train.steps is %d now, %d when %s was saved: the learning rate keeps decaying "
                       "over the checkpoint's schedule", config.train.steps, steps, path)


def check_data_sizes(path: Path, streams: dict) -> None:
    """CheckpointError when a data file has another number of records, or the run another data
    order seed, than when `path` was saved. `streams`: {part name: RecordStream}."""
    state = read_json(path / layout.STATE_FILE)
    for name, stream in streams.items():
        saved = (state.get(name) or {}).get("size")
        if stream is not None and saved is not None and saved != len(stream.records):
            raise CheckpointError(
                f"{stream.name} has {len(stream.records)} records, but {path} was taken with {saved}: "
                f"the data position cannot be restored; use the data the run started with")
        seed = (state.get(name) or {}).get("seed")
        if stream is not None and seed is not None and seed != stream.seed:
            raise CheckpointError(
                f"{stream.name}: {path} was taken with data order seed {seed}, this run has {stream.seed} "
                f"(train.seed, or data.shuffle_seed when set): the data position cannot be restored; "
                f"resume with the seed the run started with")


def save(rt) -> Path:
    """Collective: a checkpoint of the run at `rt.step`."""
    from megatron_uniapl.checkpoint.training_state import training_sharded_state

    return collective.save_checkpoint(
        rt.config.checkpoint_dir, rt.step, training_sharded_state(rt.chunks, rt.optimizer),
        {name: part.state_dict() for name, part in rt.parts().items()},
        {name: part.state_dict() for name, part in rt.rank_parts().items()},
        keep_last=rt.config.checkpoint.keep_last, meta=marker_meta(rt.config, rt.arch),
        write_extra=_model_files(rt),
    )


def restore(rt, paths: list[Path]) -> Path | None:
    """Collective: load the first of `paths` that reads into `rt` (model, optimizer, parts).

    An unreadable checkpoint is moved aside (rank 0) and the next one is tried; the caller built
    the model without loading its initial weights, so if none loads this is an error, never a
    silent fresh start. Returns the checkpoint loaded (None when `paths` is empty)."""
    from megatron_uniapl.checkpoint.training_state import apply_training_state, training_sharded_state

    failures = []
    for path in paths:
        try:
            marker = layout.read_marker(path)
            check_compatible(path, marker, rt.config, rt.arch)
            loaded = collective.load_checkpoint(path, training_sharded_state(rt.chunks, rt.optimizer, is_loading=True))
        except UnreadableCheckpointError as err:
            if len(paths) == 1:
                raise
            failures.append(f"{path.name}: {err}")
            if collective.rank() == 0:
                layout.set_aside(path, str(err))
            collective.all_ranks_ok(True)
            continue
        error = None
        try:
            apply_training_state(loaded.sharded, rt.chunks, rt.optimizer)
            _load_parts(path, rt.parts(), loaded.common)
            _load_rank_parts(path, rt.rank_parts(), loaded)
        except CheckpointError as err:
            error = err
        except Exception as err:  # noqa: BLE001 - every rank must reach the agreement below
            error = CheckpointError(f"{path}: cannot be restored into this run ({type(err).__name__}: {err})")
        if not collective.all_ranks_ok(error is None):
            raise error or CheckpointError(f"{path}: another rank could not restore its state (see its message)")
        if failures:
            logger.error("RESUMED FROM AN OLDER CHECKPOINT %s: newer ones could not be read (%s)",
                         path.name, " | ".join(failures))
        logger.info("resumed from %s at step %d", path, rt.step)
        return path
    if failures:
        raise CheckpointError(f"no checkpoint under {rt.config.checkpoint_dir} could be read: {' | '.join(failures)}")
    return None


def _load_parts(path: Path, parts: dict, saved: dict) -> None:
    for name, part in parts.items():
        if name not in saved:
            raise CheckpointError(f"{path / layout.STATE_FILE}: no state for {name!r}; the checkpoint was "
                                  f"written by a run with other parts (e.g. another objective)")
        try:
            part.load_state_dict(saved[name])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path / layout.STATE_FILE}: {name}: {err}") from None


def _load_rank_parts(path: Path, parts: dict, loaded) -> None:
    same_world = loaded.marker.get("world_size") == collective.world()
    for name, part in parts.items():
        if name == "rng" and (not same_world or name not in loaded.per_rank):
            logger.warning("RNG streams not restored: %s was saved by %s ranks, this run has %d",
                           path, loaded.marker.get("world_size"), collective.world())
            continue
        if name not in loaded.per_rank:
            raise CheckpointError(f"{path}: holds no {name} state for rank {collective.rank()} "
                                  f"(saved by {loaded.marker.get('world_size')} ranks)")
        part.load_state_dict(loaded.per_rank[name])


def _model_files(rt):
    """Rank 0 writes what makes a training checkpoint also a model checkpoint: the HF config and
    tokenizer and `uniapl_model.json`, so `tools/convert_hf.py export --mcore-dir iter_XXXXXXX`
    (and `tools/eval.py`) accept it directly."""
    from megatron_uniapl.convert import mcore_checkpoint as model_ckpt

    def write(stage: Path) -> None:
        hf_dir = Path(rt.config.model.hf_dir)
        model_ckpt.write_model_files(stage, hf_dir, json.loads((hf_dir / "config.json").read_text()),
                                     getattr(rt.modules[0], "uniapl_spec", "portable"), rt.config.model)

    return write
