"""`train.seed` reaches the data order and the tiny model a run creates, not only sampling."""

from __future__ import annotations

import json
import random

import pytest

from megatron_uniapl.config import load_config
from megatron_uniapl.data.stream import RecordStream

TINY_RECIPE = "recipes/tiny_cpu.yaml"


def expected_order(n: int, seed: int, epoch: int = 0) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


@pytest.mark.parametrize(("overrides", "seed"), [([], 0), (["train.seed=5"], 5),
                                                 (["train.seed=5", "data.shuffle_seed=2"], 2)])
def test_the_data_order_seed_follows_train_seed_unless_set(overrides, seed):
    assert load_config(TINY_RECIPE, overrides).data_seed == seed


def test_the_run_seed_reaches_both_data_streams():
    from megatron_uniapl.preflight import read_data

    demos, prompts = read_data(load_config(TINY_RECIPE, ["train.seed=7"]))
    assert (demos.seed, prompts.seed) == (7, 8)
    records = demos.records
    assert demos.take(5) == [records[i] for i in expected_order(len(records), 7)[:5]]
    other, _ = read_data(load_config(TINY_RECIPE, ["train.seed=8"]))
    assert other.take(5) == [records[i] for i in expected_order(len(records), 8)[:5]]
    assert expected_order(len(records), 8)[:5] != expected_order(len(records), 7)[:5]


def test_a_stream_resumes_only_in_its_own_order():
    records = list(range(10))
    first = RecordStream(records, 0, "demos.jsonl")
    assert first.take(13) == expected_order(10, 0) + expected_order(10, 0, 1)[:3]
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"epoch": 1, "cursor": 3, "size": 10, "seed": 0}
    resumed = RecordStream(records, 0, "demos.jsonl")
    resumed.load_state_dict(state)
    assert resumed.take(4) == first.take(4)
    with pytest.raises(ValueError, match=r"demos\.jsonl: the checkpoint was taken with data order seed 0, "
                                         r"this run has 1"):
        RecordStream(records, 1, "demos.jsonl").load_state_dict(state)
    legacy = RecordStream(records, 1, "demos.jsonl")  # a checkpoint from before the seed was recorded
    legacy.load_state_dict({"epoch": 0, "cursor": 2, "size": 10})
    assert legacy.take(1) == [expected_order(10, 1)[2]]


def test_a_run_creates_its_tiny_model_with_its_seed_and_records_it(tmp_path):
    import torch
    from safetensors.torch import load_file

    from megatron_uniapl.model.tiny import create_tiny_qwen3, tiny_model_seed
    from megatron_uniapl.preflight import check_tiny_model
    from megatron_uniapl.runtime import _model_dir

    config = load_config(TINY_RECIPE, [f"model.hf_dir={tmp_path}/tiny", "train.seed=3"])
    check_tiny_model(config)  # nothing there yet: nothing to check
    made = _model_dir(config)
    assert tiny_model_seed(made) == 3
    check_tiny_model(config)  # its own seed: accepted
    weights = load_file(made / "model.safetensors")
    reference = load_file(create_tiny_qwen3(tmp_path / "ref3", seed=3) / "model.safetensors")
    other = load_file(create_tiny_qwen3(tmp_path / "ref4", seed=4) / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    assert not torch.equal(weights["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    assert tiny_model_seed(tmp_path / "ref3") is None  # a model made outside a run is not marked
