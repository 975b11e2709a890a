"""The state-dict protocol of a run's resumable parts, and the two file formats they are stored in.

A part is anything with `state_dict()` / `load_state_dict(state)` (the LR schedule, the data
streams, the loop counters, the co-trained discriminator, the RNG streams). A checkpoint saves
`{name: part.state_dict()}` and a resume hands each part its entry back, so adding a resumable
part means adding it to the run's list of parts, not editing the checkpoint code.

Neither format can run code when read, unlike pickle (a crafted pickled file executes whatever
it names on load):
- run-wide state (rank 0, once): JSON, so it must be plain data (dict with str keys, list,
  str, int, float, bool, None); anything else is refused at save time;
- per-rank state (tensors, e.g. a tensor-parallel shard of the discriminator with its optimizer
  moments): `torch.save`, read back with `torch.load(weights_only=True)`, which accepts tensors
  and plain containers only and refuses any other object.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from megatron_uniapl.checkpoint.layout import UnreadableCheckpointError, token


@runtime_checkable
class Stateful(Protocol):
    """A resumable part: its state as tensors and plain data, and the inverse."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_plain(value: Any, where: str) -> None:
    """TypeError naming the path of the first value JSON cannot store exactly."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where}: {value} is not a finite number (JSON cannot store it)")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            check_plain(item, f"{where}.{key}")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not plain data (dict, list, str, number, bool, None)")


def write_json(path: Path, data: dict) -> None:
    """Write plain data as JSON, atomically (TypeError for anything that is not plain data)."""
    check_plain(data, path.name)
    tmp = path.with_name(f".{path.name}.tmp-{token()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableCheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableCheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise UnreadableCheckpointError(f"{path}: not a JSON object")
    return data


def write_tensors(path: Path, data: dict) -> None:
    """`torch.save` of tensors and plain data, atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{token()}")
    torch.save(data, tmp)
    os.replace(tmp, path)


def read_tensors(path: Path) -> dict:
    """Read a `write_tensors` file; UnreadableCheckpointError for a truncated file or one that
    holds anything but tensors and plain data (never unpickled)."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UnreadableCheckpointError(f"{path}: missing") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnreadableCheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain data ({first})") from None
    except Exception as err:  # truncated zip, EOF, bad magic: torch raises several types
        raise UnreadableCheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise UnreadableCheckpointError(f"{path}: not a dictionary of state")
    return data


class RNGStreams:
    """This rank's random streams (python, numpy, torch, CUDA, Megatron's tracker) as a part, so a
    resumed run draws exactly what the uninterrupted run would have drawn."""

    def state_dict(self) -> dict[str, Any]:
        from megatron.core.tensor_parallel import random as mp_random

        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        tracker = mp_random.get_cuda_rng_tracker()
        return {
            "python": [version, list(internal), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "tracker": tracker.get_states() if tracker.is_initialized() else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from megatron.core.tensor_parallel import random as mp_random

        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if state.get("tracker") is not None:
            mp_random.get_cuda_rng_tracker().set_states(state["tracker"])
