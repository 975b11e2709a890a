"""Check a Megatron distributed-checkpoint directory before PyTorch reads it.

PyTorch's distributed checkpoint reads its `.metadata` with `pickle.load`, and the non-tensor
items of the `.distcp` files with `torch.load(weights_only=False)`: a crafted checkpoint would
run code when loaded. Tensors themselves are read with `weights_only=True`. Before handing a
directory to PyTorch, `check_weights_dir` reads the same bytes safely:
- `.metadata` with an unpickler that only builds the checkpoint-metadata classes PyTorch writes
  (anything else is refused: no callable outside that list is ever resolved);
- every file the metadata names must exist and be long enough for its items (a truncated
  `.distcp` is reported by name here, not as an EOFError deep inside the reader);
- every non-tensor item with `torch.load(weights_only=True)` (tensors and plain data only).
Checkpoints remain input to trust with care (see the README's reliability section), but
these are the reads that could execute code, and they are refused for anything unexpected.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path



class WeightsCheckError(ValueError):
    """A distributed-checkpoint directory that is missing, truncated, or holds what we refuse."""

_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.planner": {"SavePlan", "WriteItem", "WriteItemType", "TensorWriteData"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size", "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
              "uint8", "bool", "float8_e4m3fn", "float8_e5m2"},
    "collections": {"OrderedDict"},
    "pathlib": {"PosixPath", "PurePosixPath"},  # storage_meta.checkpoint_id of a plain DCP save
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of checkpoint metadata")


def read_metadata(weights_dir: Path):
    """The checkpoint's metadata, unpickled with the allow-list above."""
    meta_file = weights_dir / ".metadata"
    if not meta_file.is_file():
        raise WeightsCheckError(f"{meta_file}: missing (the checkpoint's index of its weight files)")
    try:
        with meta_file.open("rb") as f:
            return _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise WeightsCheckError(f"{meta_file}: refused: {err}") from None
    except Exception as err:  # truncated or garbled: EOFError, ValueError, ...
        raise WeightsCheckError(f"{meta_file}: unreadable ({type(err).__name__}: {err})") from None


def check_weights_dir(weights_dir: str | Path) -> None:
    """WeightsCheckError naming the file when `weights_dir` is missing, truncated or
    holds non-tensor items that are not plain data."""
    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise WeightsCheckError(f"{weights_dir}: missing (no weights directory)")
    metadata = read_metadata(weights_dir)
    storage = getattr(metadata, "storage_data", None)
    if not isinstance(storage, dict):
        raise WeightsCheckError(f"{weights_dir / '.metadata'}: names no weight files")
    needed: dict[str, int] = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in needed.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise WeightsCheckError(f"{weights_dir / '.metadata'}: refused: names a file outside "
                                            f"the checkpoint ({name})")
        file = weights_dir / name
        if not file.is_file():
            raise WeightsCheckError(f"{file}: missing")
        if file.stat().st_size < size:
            raise WeightsCheckError(
                f"{file}: truncated ({file.stat().st_size} bytes, the metadata needs {size})")
    for fqn, item in metadata.state_dict_metadata.items():
        if not isinstance(item, BytesStorageMetadata):
            continue
        info = storage[MetadataIndex(fqn)]
        if getattr(info, "transform_descriptors", None):
            raise WeightsCheckError(
                f"{weights_dir / info.relative_path}: item {fqn} is stored with transforms "
                f"{list(info.transform_descriptors)}, which this version does not read")
        with (weights_dir / info.relative_path).open("rb") as f:
            f.seek(info.offset)
            data = f.read(info.length)
        try:
            torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise WeightsCheckError(
                f"{weights_dir / info.relative_path}: item {fqn} refused: not tensors and plain data "
                f"({first})") from None
        except Exception as err:
            raise WeightsCheckError(
                f"{weights_dir / info.relative_path}: item {fqn} unreadable ({type(err).__name__})") from None
