"""Training checkpoints: exact resume of model + Megatron optimizer + RNG, atomic publication,
`latest` handling, keep-last-K, and a crash in the middle of a save."""

from __future__ import annotations

import pytest
import torch
from parity_utils import megatron_from_hf

from megatron_uniapl import checkpoint as ckpt


def build(hf_dir, distributed_optimizer: bool):
    """Model wrapped in Megatron DDP with a Megatron Adam optimizer (the trainer's shapes)."""
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    _, model = megatron_from_hf(hf_dir)
    ddp = DistributedDataParallel(
        model.config, DistributedDataParallelConfig(use_distributed_optimizer=distributed_optimizer), model
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-3, use_distributed_optimizer=distributed_optimizer, clip_grad=1.0), [ddp]
    )
    return ddp, optimizer


def step(ddp, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 151_000, (2, 16), generator=g)
    pos = torch.arange(16).unsqueeze(0).expand(2, -1)
    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    # Dropout-free model: draw from the global RNG to prove its stream is restored on resume.
    noise = torch.rand(()).item()
    (ddp(ids, pos, None, labels=ids).mean() * (1 + noise)).backward()
    ddp.finish_grad_sync()
    optimizer.step()
    return noise


def sharded(ddp, optimizer, is_loading=False):
    return ckpt.training_sharded_state([ddp], optimizer, is_loading=is_loading)


def weights(ddp):
    return {n: p.detach().clone() for n, p in ddp.module.named_parameters()}


@pytest.mark.parametrize("distributed_optimizer", [False, True])
def test_resume_is_bitwise(tiny_tied, tmp_path, megatron_world, distributed_optimizer):
    ddp, opt = build(tiny_tied, distributed_optimizer)
    step(ddp, opt, 0)
    ckpt.save_checkpoint(tmp_path, 1, sharded(ddp, opt), {"step": 1, "data": {"cursor": 17}},
                         {"rng": ckpt.RNGStreams().state_dict()})
    noise_a = step(ddp, opt, 1)
    after_a = weights(ddp)

    ddp2, opt2 = build(tiny_tied, distributed_optimizer)  # fresh: same init, no state
    torch.manual_seed(999)  # a different RNG position that resume must undo
    path = ckpt.latest_checkpoint(tmp_path)
    loaded = ckpt.load_checkpoint(path, sharded(ddp2, opt2, is_loading=True))
    ckpt.apply_training_state(loaded.sharded, [ddp2], opt2)
    ckpt.RNGStreams().load_state_dict(loaded.per_rank["rng"])
    assert loaded.common == {"step": 1, "data": {"cursor": 17}} and loaded.marker["step"] == 1
    noise_b = step(ddp2, opt2, 1)
    assert noise_a == noise_b
    for name, tensor in weights(ddp2).items():
        assert torch.equal(tensor, after_a[name]), name


def test_latest_keep_last_and_crash_mid_save(tiny_tied, tmp_path, megatron_world, monkeypatch):
    from megatron.core import dist_checkpointing

    ddp, opt = build(tiny_tied, False)
    step(ddp, opt, 0)  # checkpoints are taken after optimizer steps: the Adam state exists
    for s in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, s, sharded(ddp, opt), {"step": s}, keep_last=2)
    assert [s for s, _ in ckpt.complete_iterations(tmp_path)] == [2, 3]
    assert (tmp_path / "latest").read_text().strip() == "iter_0000003"

    real_save = dist_checkpointing.save

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)  # the weights land on disk, then the process "dies"
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(dist_checkpointing, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):  # not an Exception: it passes the agreement, as a kill would
        ckpt.save_checkpoint(tmp_path, 4, sharded(ddp, opt), {"step": 4}, keep_last=2)
    monkeypatch.setattr(dist_checkpointing, "save", real_save)

    # latest still names step 3, which loads; the half-written step 4 is not a checkpoint.
    assert ckpt.latest_checkpoint(tmp_path).name == "iter_0000003"
    assert list(tmp_path.glob("iter_0000004.partial-*"))
    ddp2, opt2 = build(tiny_tied, False)
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), sharded(ddp2, opt2, is_loading=True))
    assert loaded.common == {"step": 3}
    # The next save cleans the leftover.
    ckpt.save_checkpoint(tmp_path, 4, sharded(ddp, opt), {"step": 4}, keep_last=2)
    assert not list(tmp_path.glob("*.partial-*"))
    assert [s for s, _ in ckpt.complete_iterations(tmp_path)] == [3, 4]


def test_stale_latest_falls_back_and_incomplete_is_refused(tmp_path):
    (tmp_path / "iter_0000005").mkdir()
    (tmp_path / "latest").write_text("iter_0000005\n")
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(ckpt.CheckpointError, match="not a complete training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "iter_0000005", {})
