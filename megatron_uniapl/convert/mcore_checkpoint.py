"""Model checkpoints in Megatron's distributed format, published atomically.

Directory layout of a converted model (`MCORE`):

    MCORE/
      uniapl_model.json   written last: format version, HF config, layer spec, layout, dtype
      hf/                 config.json (+ generation_config.json, tokenizer files when present)
      weights/            megatron.core.dist_checkpointing (torch_dist) files

The weights are stored as global tensors with sharding metadata, so a checkpoint written at one
TP/PP layout loads at any other. Everything is first written to a sibling `MCORE.partial-*`
directory and renamed into place only when complete: a crash leaves either the old checkpoint or
none, never one that looks complete but is not.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_uniapl.assets import TOKENIZER_FILES
from megatron_uniapl.data.manifest import replace_dir_atomic

logger = logging.getLogger(__name__)

FORMAT = "megatron_uniapl.model/1"
META_NAME = "uniapl_model.json"
HF_EXTRA_FILES = ("generation_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json")


class CheckpointExistsError(FileExistsError):
    """The output directory already holds a checkpoint and overwriting was not requested."""


class IncompleteCheckpointError(FileNotFoundError):
    """A directory that is not a complete megatron_uniapl model checkpoint."""


@dataclass
class ModelCheckpointMeta:
    """What `uniapl_model.json` records about a model checkpoint."""

    hf_config: dict
    """The Hugging Face config.json of the architecture."""
    spec: str
    """Layer spec the weights were saved from ("portable" or "te"): parameter keys depend on it."""
    tensor_parallel: int
    """TP size at save time (informational: any layout can load)."""
    pipeline_parallel: int
    """PP size at save time (informational)."""
    dtype: str
    """Parameter dtype at save time."""
    has_tokenizer: bool
    """Whether `hf/` holds tokenizer files."""

    def to_json(self) -> dict:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def read(cls, mcore_dir: str | Path) -> "ModelCheckpointMeta":
        path = Path(mcore_dir) / META_NAME
        if not path.is_file():
            hint = " (an interrupted write leaves a *.partial-* directory beside it)" if Path(mcore_dir).exists() else ""
            raise IncompleteCheckpointError(f"{mcore_dir}: no {META_NAME}; not a complete checkpoint{hint}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise IncompleteCheckpointError(f"{path}: unreadable ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise IncompleteCheckpointError(f"{path}: format {found!r}, expected {FORMAT!r}")
        data.pop("format")
        try:
            return cls(**data)
        except TypeError as err:
            raise IncompleteCheckpointError(f"{path}: unexpected fields ({err})") from None


def check_complete(mcore_dir: str | Path) -> ModelCheckpointMeta:
    """The checkpoint's metadata, after checking that every file it needs is there and readable:
    the HF config, the tokenizer when the metadata says it has one, and the weights (their index,
    every file long enough, non-tensor items plain data). IncompleteCheckpointError otherwise."""
    from megatron_uniapl.convert.dcp_check import WeightsCheckError, check_weights_dir

    meta = ModelCheckpointMeta.read(mcore_dir)
    mcore_dir = Path(mcore_dir)
    missing = [] if (mcore_dir / "hf" / "config.json").is_file() else ["hf/config.json"]
    hf = mcore_dir / "hf"
    if meta.has_tokenizer and not ((hf / "tokenizer.json").is_file() or (hf / "tokenizer.model").is_file()):
        missing.append("hf/tokenizer.json")
    if missing:
        raise IncompleteCheckpointError(f"{mcore_dir / missing[0]}: missing; {mcore_dir} is not a complete "
                                        f"checkpoint (an interrupted copy or deletion?)")
    try:
        check_weights_dir(mcore_dir / "weights")
    except WeightsCheckError as err:
        raise IncompleteCheckpointError(f"{err}; {mcore_dir} is not a usable checkpoint") from None
    return meta


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / META_NAME).is_file()


def check_output_dir(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse to write over an existing checkpoint (or any non-empty directory) unless told to."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "a checkpoint" if is_checkpoint(out) else "files"
        raise CheckpointExistsError(f"{out} already holds {what}; pass --overwrite to replace it")


def staging_dir(out_dir: str | Path, token: str) -> Path:
    """The sibling directory a checkpoint is written into before it is published."""
    out = Path(out_dir)
    return out.parent / f"{out.name}.partial-{token}"


def new_token() -> str:
    """A token shared by all ranks (rank 0 draws it and broadcasts)."""
    token = [uuid.uuid4().hex[:12]]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(token, src=0)
    return token[0]


def publish(stage: Path, out_dir: str | Path) -> None:
    """Atomically make `stage` visible as `out_dir` (rank 0 only), replacing an old one."""
    replace_dir_atomic(stage, Path(out_dir), "old")


def copy_hf_files(hf_dir: str | Path, dest: Path) -> bool:
    """Copy config, generation config and tokenizer files; returns whether a tokenizer was found."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(hf_dir)
    shutil.copyfile(src / "config.json", dest / "config.json")
    for name in HF_EXTRA_FILES + TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    return (src / "tokenizer.json").is_file() or (src / "tokenizer.model").is_file()


def write_model_files(stage: Path, hf_dir: str | Path, hf_config: dict, spec: str, options) -> None:
    """Rank 0: the HF files and `uniapl_model.json` that make `stage` a model checkpoint
    (written last by callers, after the weights). `options`: the ModelOptions saved from."""
    has_tok = copy_hf_files(hf_dir, stage / "hf")
    meta = ModelCheckpointMeta(
        hf_config=hf_config, spec=spec, tensor_parallel=options.tensor_parallel,
        pipeline_parallel=options.pipeline_parallel, dtype=options.dtype, has_tokenizer=has_tok,
    )
    (stage / META_NAME).write_text(json.dumps(meta.to_json(), indent=2))


def save_model_weights(model_chunks: list[torch.nn.Module], weights_dir: Path) -> None:
    """Collective: every rank saves its shards of every chunk into `weights_dir`."""
    from megatron.core import dist_checkpointing

    if not dist.is_initialized() or dist.get_rank() == 0:
        weights_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_initialized():
        dist.barrier()
    dist_checkpointing.save(_sharded_state_dict(model_chunks), str(weights_dir))


EXTRA_STATE = "_extra_state"
"""Suffix of the per-module extra state Transformer Engine keeps (FP8 scaling history)."""


def load_model_weights(model_chunks: list[torch.nn.Module], weights_dir: Path) -> None:
    """Collective: every rank reads its shards (at its own TP/PP layout) from `weights_dir`.

    Parameters and buffers must all be in the checkpoint. Transformer Engine modules also ask
    for their `_extra_state`, which a checkpoint written from the portable spec (every
    conversion) does not hold: those modules then keep the fresh state they were built with
    (FP8 scaling statistics start from scratch, as in any new run). Anything else missing is
    an error that names it."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    from megatron_uniapl.convert.dcp_check import check_weights_dir

    check_weights_dir(weights_dir)  # refuses what PyTorch would unpickle unchecked
    sharded = _sharded_state_dict(model_chunks)
    state, _, not_stored = dist_checkpointing.load(
        sharded, str(weights_dir), strict=StrictHandling.RETURN_UNEXPECTED)
    # Sharded objects are named "<key>/shard_<offsets>"; the key ends with the suffix.
    absent = sorted(k for k in not_stored if not str(k).split("/")[0].endswith(EXTRA_STATE))
    if absent:
        raise IncompleteCheckpointError(
            f"{weights_dir}: {len(absent)} tensors of the model are not in the checkpoint, e.g. {absent[:3]} "
            f"(another model size or layer layout?)")
    # A training checkpoint also holds optimizer state (returned among the common objects):
    # keep only what the model asked for.
    state = {k: v for k, v in state.items() if k in sharded}
    targets = [(model_chunks[0], state)] if len(model_chunks) == 1 else [
        (chunk, state[f"model{i}"]) for i, chunk in enumerate(model_chunks)]
    for chunk, chunk_state in targets:
        result = chunk.load_state_dict(chunk_state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith(EXTRA_STATE)]
        if missing or result.unexpected_keys:
            raise IncompleteCheckpointError(
                f"{weights_dir}: the loaded state does not fit the model (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})")


def _sharded_state_dict(model_chunks: list[torch.nn.Module]) -> dict:
    if len(model_chunks) == 1:
        return model_chunks[0].sharded_state_dict()
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(model_chunks)}
