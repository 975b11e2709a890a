"""A step's time is explained: every phase labelled, the rest in time/other_s (metrics/timing.py)."""

import time

import pytest

from megatron_uniapl.metrics.timing import phase_seconds, timed, with_checkpoint_time, with_other_time

# A rollout step's labelled phases: the co-location round's and the loop's own.
PHASES = {"time/offload_s": 0.25, "time/wake_weights_s": 0.125, "time/weight_sync_s": 0.5,
          "time/wake_kv_s": 0.125, "time/generate_s": 1.0, "time/sleep_s": 0.25, "time/onload_s": 0.25,
          "time/data_s": 0.125, "time/reward_s": 0.25, "time/disc_score_s": 0.5,
          "time/old_logprobs_s": 0.5, "time/ref_logprobs_s": 0.25, "time/train_s": 1.5,
          "time/disc_update_s": 0.125}


def test_other_is_the_step_minus_the_labelled_phases_and_a_save_is_one_more_phase():
    # The phases sum to 5.75 s of a 6.5 s step.
    rows = with_other_time({**PHASES, "mem/offloaded_gib": 3.0}, 6.5)
    assert rows["time/step_s"] == 6.5 and rows["time/other_s"] == 0.75 and rows["mem/offloaded_gib"] == 3.0
    assert phase_seconds(rows) + rows["time/other_s"] == rows["time/step_s"]
    saved = with_checkpoint_time(rows, 2.25)
    assert (saved["time/checkpoint_s"], saved["time/step_s"], saved["time/other_s"]) == (2.25, 8.75, 0.75)
    assert phase_seconds(saved) + saved["time/other_s"] == saved["time/step_s"]
    # An SFT-only step has no rollout phases: everything but data and training is other.
    assert with_other_time({"time/data_s": 0.5, "time/train_s": 2.0}, 3.0)["time/other_s"] == 0.5


def test_timed_adds_each_blocks_wall_time_to_its_phase():
    times: dict[str, float] = {}
    for _ in range(2):
        with timed(times, "reward"):
            time.sleep(0.05)
    with pytest.raises(KeyError):  # a failing block is still timed
        with timed(times, "train"):
            raise KeyError("x")
    assert sorted(times) == ["time/reward_s", "time/train_s"]
    assert 0.1 <= times["time/reward_s"] < 0.5 and times["time/train_s"] < 0.05
