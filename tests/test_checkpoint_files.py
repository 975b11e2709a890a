"""Checkpoint files without a model: the directory layout and its cleanup, storage checks, and the
code-free state formats (crafted pickles are refused and never executed)."""

from __future__ import annotations

import io
import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from megatron_uniapl.checkpoint import layout, state, storage
from megatron_uniapl.checkpoint.layout import CheckpointError, UnreadableCheckpointError
from megatron_uniapl.convert.dcp_check import WeightsCheckError, check_weights_dir, read_metadata


def complete(root, step, world=1):
    path = root / layout.iteration_name(step)
    (path / "weights").mkdir(parents=True)
    (path / layout.MARKER).write_text(json.dumps({"format": layout.FORMAT, "step": step, "world_size": world}))
    return path


class Exploit:
    """Unpickling this would create `target` (a stand-in for arbitrary code)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_candidates_latest_first_then_newest_and_stale_latest(tmp_path):
    for s in (10, 20, 30):
        complete(tmp_path, s)
    layout.write_latest(tmp_path, "iter_0000020")
    assert [p.name for p in layout.resume_candidates(tmp_path)] == ["iter_0000020", "iter_0000030", "iter_0000010"]
    layout.write_latest(tmp_path, "iter_0000099")  # names nothing: the newest complete one first
    assert [p.name for p in layout.resume_candidates(tmp_path)] == ["iter_0000030", "iter_0000020", "iter_0000010"]


def test_leftovers_are_removed_and_set_aside_checkpoints_kept(tmp_path):
    keep = complete(tmp_path, 10)
    (tmp_path / "iter_0000020.partial-ab12").mkdir()
    (tmp_path / "iter_0000005.deleting-cd34").mkdir()
    half_pruned = tmp_path / "iter_0000003"  # an older version deleted in place: marker gone first
    (half_pruned / "hf").mkdir(parents=True)
    (half_pruned / "uniapl_model.json").write_text("{}")
    aside = layout.set_aside(complete(tmp_path, 30), "test")
    (tmp_path / "latest.tmp-ee").write_text("x")
    removed = layout.clean_leftovers(tmp_path)
    assert sorted(removed) == ["iter_0000003", "iter_0000005.deleting-cd34", "iter_0000020.partial-ab12"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([keep.name, aside.name])
    assert aside.name.startswith("iter_0000030.unreadable-") and (aside / layout.MARKER).is_file()


def test_prune_renames_before_deleting(tmp_path, monkeypatch):
    for s in (1, 2, 3):
        complete(tmp_path, s)
    seen = []
    monkeypatch.setattr(layout.shutil, "rmtree", lambda p, ignore_errors=False: seen.append(p.name))
    layout.prune(tmp_path, keep_last=2)  # a "kill" before the delete: rmtree does nothing
    assert [s for s, _ in layout.complete_iterations(tmp_path)] == [2, 3]
    assert len(seen) == 1 and seen[0].startswith("iter_0000001.deleting-")
    monkeypatch.undo()
    layout.clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000002", "iter_0000003"]


def test_markers_refuse_old_pickled_format_and_garbage(tmp_path):
    old = complete(tmp_path, 1)
    (old / layout.MARKER).write_text(json.dumps({"format": "megatron_uniapl.train/1", "step": 1}))
    with pytest.raises(CheckpointError, match="pickled state"):
        layout.read_marker(old)
    (old / layout.MARKER).write_bytes(b"\xff\x00")
    with pytest.raises(UnreadableCheckpointError, match="unreadable"):
        layout.read_marker(old)


def test_storage_checks_name_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match=r"^checkpoint.dir=.*file/sub: cannot write there"):
        storage.check_writable(blocker / "sub", "checkpoint.dir")
    storage.check_writable(tmp_path / "new" / "dir", "logging.run_dir")
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())
    with pytest.raises(CheckpointError, match=r"GiB free, but a checkpoint of this run needs about"):
        storage.check_free_space(tmp_path, storage.free_bytes(tmp_path) + 2**40, "checkpoint.dir")
    assert storage.write_failure(tmp_path) is None
    # 9.7M parameters in float32 with Adam: 12 bytes each, plus 5%.
    assert storage.checkpoint_bytes_estimate(9_732_160, 4, True) == int(9_732_160 * 12 * 1.05)


def test_json_state_takes_plain_data_only(tmp_path):
    state.write_json(tmp_path / "s.json", {"a": [1, 2.5, None, True], "b": {"c": "d"}})
    assert state.read_json(tmp_path / "s.json") == {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    for bad, where in (({"t": torch.zeros(1)}, "t"), ({"x": float("nan")}, "x"), ({1: 2}, "key 1")):
        with pytest.raises(TypeError, match=where):
            state.write_json(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()


def test_rank_state_round_trip_and_crafted_pickle_is_refused(tmp_path):
    data = {"w": torch.arange(4.0), "n": 3, "groups": [{"lr": 0.1, "betas": (0.9, 0.99), "fused": None}]}
    state.write_tensors(tmp_path / "rank0.pt", data)
    back = state.read_tensors(tmp_path / "rank0.pt")
    assert torch.equal(back["w"], data["w"]) and back["n"] == 3 and back["groups"][0]["betas"] == (0.9, 0.99)

    target = tmp_path / "pwned"
    torch.save({"x": Exploit(target)}, tmp_path / "evil.pt")
    with pytest.raises(UnreadableCheckpointError, match="refused: it holds objects other than tensors"):
        state.read_tensors(tmp_path / "evil.pt")
    assert not target.exists(), "the crafted file's code ran"
    raw = (tmp_path / "rank0.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UnreadableCheckpointError, match="cut.pt: unreadable"):
        state.read_tensors(tmp_path / "cut.pt")


def test_rng_streams_round_trip_through_the_safe_format(tmp_path, megatron_world):
    streams = state.RNGStreams()
    state.write_tensors(tmp_path / "r.pt", {"rng": streams.state_dict()})
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    streams.load_state_dict(state.read_tensors(tmp_path / "r.pt")["rng"])
    assert (random.random(), float(np.random.rand())) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


def _save_weights(directory):
    """A real torch distributed checkpoint with a tensor and a non-tensor (bytes) item."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.arange(6.0), "extra": {"step": 3}}, checkpoint_id=str(directory), no_dist=True)


def test_weights_check_reads_real_metadata_and_refuses_crafted_or_truncated(tmp_path):
    weights = tmp_path / "weights"
    _save_weights(weights)
    check_weights_dir(weights)
    meta = read_metadata(weights)
    assert "w" in meta.state_dict_metadata

    target = tmp_path / "pwned"
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    for f in weights.iterdir():
        (crafted / f.name).write_bytes(f.read_bytes())
    (crafted / ".metadata").write_bytes(pickle.dumps(Exploit(target)))
    with pytest.raises(WeightsCheckError, match=r"\.metadata: refused: .*open is not part"):
        check_weights_dir(crafted)
    assert not target.exists()

    distcp = next(weights.glob("*.distcp"))
    data = distcp.read_bytes()
    distcp.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsCheckError, match=r"\.distcp: truncated"):
        check_weights_dir(weights)
    distcp.unlink()
    with pytest.raises(WeightsCheckError, match=r"\.distcp: missing"):
        check_weights_dir(weights)
    (weights / ".metadata").unlink()
    with pytest.raises(WeightsCheckError, match=r"\.metadata: missing"):
        check_weights_dir(weights)


def test_weights_check_refuses_a_crafted_non_tensor_item(tmp_path):
    """The bytes items of a .distcp file are what PyTorch unpickles with weights_only=False."""
    weights = tmp_path / "weights"
    _save_weights(weights)
    meta = read_metadata(weights)
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    fqn = next(k for k, v in meta.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    info = meta.storage_data[MetadataIndex(fqn)]
    payload = io.BytesIO()
    torch.save(Exploit(tmp_path / "pwned"), payload)
    evil = payload.getvalue()
    file = weights / info.relative_path
    blob = bytearray(file.read_bytes())
    # Splice the crafted item in place of the real one and point the metadata at it.
    blob[info.offset:info.offset + info.length] = evil
    file.write_bytes(bytes(blob))
    info.length = len(evil)
    (weights / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(WeightsCheckError, match=r"item extra\S* refused: not tensors and plain data"):
        check_weights_dir(weights)
    assert not (tmp_path / "pwned").exists()
    assert os.path.getsize(file) > 0
