"""Saving and restoring a run's parts generically, falling back past an unreadable checkpoint, and
a failed save (real Megatron model and optimizer, one process)."""

from __future__ import annotations

import errno
import logging
import shutil
from dataclasses import dataclass, field

import pytest
import torch
from test_checkpoint import build, step, weights

from megatron_uniapl.checkpoint import layout, resume
from megatron_uniapl.checkpoint.layout import CheckpointError, UnreadableCheckpointError
from megatron_uniapl.checkpoint.state import RNGStreams
from megatron_uniapl.nonfinite import LoopState


@dataclass
class Counter:
    """A stand-in for a data stream: a resumable part with plain-data state."""

    position: int = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


@dataclass
class Run:
    """The attributes `resume.save` and `resume.restore` use of a Runtime."""

    config: object
    arch: object
    chunks: list
    optimizer: object
    loop: LoopState = field(default_factory=LoopState)
    data: Counter = field(default_factory=Counter)

    @property
    def step(self):
        return self.loop.step

    @property
    def modules(self):
        return [c.module for c in self.chunks]

    def parts(self):
        return {"loop": self.loop, "data": self.data}

    def rank_parts(self):
        return {"rng": RNGStreams()}


def new_run(hf_dir, tmp_path):
    from megatron_uniapl.config import load_config
    from megatron_uniapl.model.hf_config import load_qwen3_arch
    from bad_input_utils import TINY_RECIPE

    config = load_config(TINY_RECIPE, [f"model.hf_dir={hf_dir}", f"logging.run_dir={tmp_path}/run",
                                       "optimizer.use_distributed_optimizer=false"])
    ddp, opt = build(hf_dir, False)
    return Run(config, load_qwen3_arch(hf_dir), [ddp], opt)


@pytest.fixture(scope="module")
def saved(tiny_tied, tmp_path_factory, megatron_world):
    """Checkpoints at steps 1 and 2, and the weights after each step."""
    tmp = tmp_path_factory.mktemp("resume")
    rt = new_run(tiny_tied, tmp)
    after = {}
    for s in (1, 2):
        step(rt.chunks[0], rt.optimizer, s)
        rt.loop.step, rt.data.position = s, 10 * s
        resume.save(rt)
        after[s] = weights(rt.chunks[0])
    return tmp, tiny_tied, after


def damaged_copy(saved, tmp_path, target):
    tmp, _, _ = saved
    root = tmp_path / "run" / "checkpoints"
    shutil.copytree(tmp / "run" / "checkpoints", root)
    newest = root / "iter_0000002"
    victim = next(newest.glob(target))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return root


@pytest.mark.parametrize("target", ["weights/*.distcp", "weights/.metadata", "state.json", "ranks/rank0.pt",
                                    "uniapl_train.json"])
def test_unreadable_newest_falls_back_to_the_previous_one(saved, tmp_path, target, caplog):
    root = damaged_copy(saved, tmp_path, target)
    _, hf_dir, after = saved
    rt = new_run(hf_dir, tmp_path)
    with caplog.at_level(logging.ERROR):
        loaded = resume.restore(rt, layout.resume_candidates(root))
    assert loaded.name == "iter_0000001" and rt.step == 1 and rt.data.position == 10
    for name, tensor in weights(rt.chunks[0]).items():
        assert torch.equal(tensor, after[1][name]), name
    assert "RESUMED FROM AN OLDER CHECKPOINT iter_0000001" in caplog.text
    [aside] = root.glob("iter_0000002.unreadable-*")  # kept for inspection, no longer a candidate
    assert [p.name for p in layout.resume_candidates(root)] == ["iter_0000001"]


def test_explicit_checkpoint_does_not_fall_back_and_none_readable_is_an_error(saved, tmp_path):
    root = damaged_copy(saved, tmp_path, "state.json")
    _, hf_dir, _ = saved
    with pytest.raises(UnreadableCheckpointError, match=r"iter_0000002/state\.json: unreadable"):
        resume.restore(new_run(hf_dir, tmp_path), [root / "iter_0000002"])
    victim = root / "iter_0000001" / "ranks" / "rank0.pt"
    victim.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint under .* could be read: iter_0000002: .* \| iter_0000001: "):
        resume.restore(new_run(hf_dir, tmp_path), layout.resume_candidates(root))


def test_restore_checks_compatibility_before_reading_weights(saved, tmp_path):
    tmp, hf_dir, _ = saved
    rt = new_run(hf_dir, tmp_path)
    rt.config.optimizer.lr = 1e-4
    with pytest.raises(CheckpointError, match=r"optimizer\.lr=0\.003 in the checkpoint, 0\.0001 now"):
        resume.restore(rt, layout.resume_candidates(tmp / "run" / "checkpoints"))


def test_a_failed_save_names_the_cause_and_leaves_no_partial_directory(saved, tmp_path, monkeypatch):
    from megatron.core import dist_checkpointing

    tmp, hf_dir, _ = saved
    root = tmp_path / "run" / "checkpoints"
    shutil.copytree(tmp / "run" / "checkpoints", root)
    rt = new_run(hf_dir, tmp_path)
    rt.loop.step = 3

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dist_checkpointing, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"checkpoint\.dir=.*: saving step 3 failed: OSError: .*No space left on "
                                              r"device; the partial save was removed and the newest complete "
                                              r"checkpoint is iter_0000002"):
        resume.save(rt)
    assert sorted(p.name for p in root.iterdir()) == ["iter_0000001", "iter_0000002", "latest"]
