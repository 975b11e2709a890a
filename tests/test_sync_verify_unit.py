"""The sync verification's reduction runs on the model's device (NCCL groups take no CPU tensor)."""

from __future__ import annotations

import pytest
import torch


def test_the_verdict_is_reduced_on_the_models_device(megatron_world, monkeypatch):
    """Without a GPU, a model on the meta device stands in for one on CUDA: the tensor handed to
    the model-parallel all-reduce must live where the model lives, not on the CPU."""
    from megatron_uniapl.rollout import megatron_verify as mv

    class Reduced(Exception):
        pass

    seen = []

    def all_reduce(tensor, op=None, group=None):
        seen.append(tensor.device)
        raise Reduced

    class Engine:
        weight_version = 1

        def score(self, sequences, prompt_lens):
            return [[-1.0, -2.0]]

    monkeypatch.setattr(mv, "megatron_logprobs", lambda chunks, sequences, prompt_lens: [[-1.0, -2.5]])
    monkeypatch.setattr(mv.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(mv.dist, "all_reduce", all_reduce)
    with pytest.raises(Reduced):
        mv.verify_megatron_sync(Engine(), [torch.nn.Linear(1, 1, device="meta")], [[1, 2, 3]], [1], 1e-3)
    assert seen == [torch.device("meta")]


def test_mean_tolerance_fails_loudly_and_max_alone_can_be_off(megatron_world):
    from megatron_uniapl.rollout import megatron_verify as mv
    from megatron_uniapl.rollout.weight_sync import WeightSyncMismatchError

    class Engine:
        weight_version = 3

        def score(self, sequences, prompt_lens):
            return [[-1.0, -2.0, -3.0]]

    chunk = torch.nn.Linear(1, 1)
    original = mv.megatron_logprobs
    try:
        mv.megatron_logprobs = lambda chunks, sequences, prompt_lens: [[-1.0, -2.0, -3.6]]
        check = mv.verify_megatron_sync(Engine(), [chunk], [[1, 2, 3, 4]], [1], float("inf"), mean_tolerance=0.25)
        assert check.max_abs_diff == pytest.approx(0.6) and check.mean_abs_diff == pytest.approx(0.2)
        with pytest.raises(WeightSyncMismatchError, match=r"mean 0.2 over 3 tokens\), above the tolerance \(max inf, mean 0.1\)"):
            mv.verify_megatron_sync(Engine(), [chunk], [[1, 2, 3, 4]], [1], float("inf"), mean_tolerance=0.1)
    finally:
        mv.megatron_logprobs = original
