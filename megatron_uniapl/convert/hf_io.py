"""Read and write Hugging Face safetensors checkpoints, one tensor (or one slice) at a time.

Reading goes through safetensors' lazy slices, so a tensor-parallel rank loads only its shard's
bytes; writing fills shards of bounded size and writes the index last, so that a directory with
`model.safetensors.index.json` (or a single `model.safetensors`) is always complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the architecture (missing, extra or misshapen)."""


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointMismatchError(f"{index}: not a safetensors index ({type(err).__name__}: {err})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointMismatchError(f"{index}: weight_map must map tensor names to file names")
    return weight_map


def _open_safetensors(path: Path):
    """`safe_open` with errors that name the file (safetensors checks the header against the
    file's size, so a truncated or garbled file fails here, before any tensor is read)."""
    if not path.is_file():
        raise CheckpointMismatchError(f"{path}: missing (named by {INDEX_NAME})")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError (a Rust exception type), OSError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointMismatchError(f"{path}: not a readable safetensors file ({first}); the file is "
                                      f"truncated or corrupt: copy or download it again") from None


def check_safetensors(hf_dir: str | Path) -> None:
    """CheckpointMismatchError naming the first unreadable weight file of `hf_dir`."""
    with HFCheckpointReader(hf_dir):
        pass


class HFCheckpointReader:
    """Lazy access to the tensors of a Hugging Face safetensors checkpoint directory."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        index = self.dir / INDEX_NAME
        if index.is_file():
            weight_map = _read_index(index)
        elif (self.dir / SINGLE_NAME).is_file():
            weight_map = None
        else:
            raise FileNotFoundError(f"{self.dir}: neither {INDEX_NAME} nor {SINGLE_NAME} found")
        self._stack = ExitStack()
        self._files: dict[str, object] = {}
        self.location: dict[str, str] = {}
        files = sorted(set(weight_map.values())) if weight_map else [SINGLE_NAME]
        for name in files:
            handle = self._stack.enter_context(_open_safetensors(self.dir / name))
            self._files[name] = handle
            for key in handle.keys():
                self.location[key] = name

    def names(self) -> list[str]:
        return list(self.location)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.slice(name).get_shape())

    def slice(self, name: str):
        """A lazy slice: index it (`[a:b]`, `[:, a:b]`, `[:]`) to read only those bytes."""
        if name not in self.location:
            raise CheckpointMismatchError(f"{self.dir}: tensor {name!r} is missing")
        return self._files[self.location[name]].get_slice(name)

    def tensor(self, name: str) -> torch.Tensor:
        return self.slice(name)[:]

    def check(self, expected: dict[str, tuple[int, ...]], allow_extra: Iterable[str] = ()) -> None:
        """Raise `CheckpointMismatchError` listing every missing, extra or misshapen tensor."""
        have = set(self.location)
        allow = set(allow_extra)
        problems = []
        for name in sorted(set(expected) - have):
            problems.append(f"missing tensor {name} (expected shape {list(expected[name])})")
        for name in sorted(have - set(expected) - allow):
            problems.append(f"unexpected tensor {name} (shape {list(self.shape(name))})")
        for name in sorted(set(expected) & have):
            shape = self.shape(name)
            if shape != tuple(expected[name]):
                problems.append(f"tensor {name} has shape {list(shape)}, expected {list(expected[name])}")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise CheckpointMismatchError(f"{self.dir}: checkpoint does not match config.json:\n  {shown}{more}")

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardedSafetensorsWriter:
    """Write named tensors into `model-XXXXX-of-YYYYY.safetensors` files of at most `shard_bytes`.

    Shards are written under temporary names and renamed when the writer is closed, and the index
    goes last: an interrupted export never leaves a directory that looks complete.
    """

    def __init__(self, out_dir: str | Path, shard_bytes: int = 4 << 30, prefix: str = "model"):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = shard_bytes
        self.prefix = prefix
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.shard_bytes:
            self._flush()
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        if not self._pending:
            return
        tmp = self.dir / f".{self.prefix}-part{len(self._written):05d}.safetensors.tmp"
        save_file(self._pending, str(tmp), metadata={"format": "pt"})
        self._written.append((tmp.name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Finish the files; returns their final names."""
        self._flush()
        n = len(self._written)
        weight_map, names = {}, []
        for i, (tmp_name, keys) in enumerate(self._written):
            final = SINGLE_NAME if n == 1 else f"{self.prefix}-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.dir / tmp_name, self.dir / final)
            os.chmod(self.dir / final, 0o644)  # safetensors writes owner-only files
            names.append(final)
            weight_map.update({k: final for k in keys})
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            tmp = self.dir / (INDEX_NAME + ".tmp")
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
            os.replace(tmp, self.dir / INDEX_NAME)
        return names


