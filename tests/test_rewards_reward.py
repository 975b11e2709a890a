"""Reward modes on hand-worked verdicts, batch scoring, and the process pool."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from megatron_uniapl.assets import ifeval_input_path
from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.rewards.corpus import responses_for
from megatron_uniapl.rewards.registry import Constraint, build_constraints
from megatron_uniapl.rewards.reward import (
    RewardPool,
    reward_from_verdicts,
    score,
    score_batch,
)

NO_COMMA_AND_QUOTED = build_constraints(["punctuation:no_comma", "startend:quotation"], None, "t")


@dataclass
class Prompt:
    constraints: list[Constraint]


@pytest.mark.parametrize("response,strict,strict_fraction,loose,loose_fraction", [
    ('"hello"', 1.0, 1.0, 1.0, 1.0),
    ('"a, b"', 0.0, 0.5, 0.0, 0.5),
    ('Sure:\n"hello"', 0.0, 0.5, 1.0, 1.0),  # loose drops the first line
    ("Sure, here:\nhello", 0.0, 0.0, 0.0, 0.5),  # no comma without the first line
    ("", 0.0, 0.0, 0.0, 0.0),
])
def test_modes(response, strict, strict_fraction, loose, loose_fraction):
    got = {mode: score(NO_COMMA_AND_QUOTED, response, mode) for mode in RewardMode}
    assert got == {RewardMode.STRICT: strict, RewardMode.STRICT_FRACTION: strict_fraction,
                   RewardMode.LOOSE: loose, RewardMode.LOOSE_FRACTION: loose_fraction}


def test_fraction_and_empty_verdicts():
    assert reward_from_verdicts([True, False, True], RewardMode.STRICT_FRACTION) == 2 / 3
    assert reward_from_verdicts([True, False, True], "loose") == 0.0
    assert reward_from_verdicts([], RewardMode.STRICT) == 1.0


def test_batch_accepts_records_or_constraint_lists_and_checks_lengths():
    prompts = [Prompt(NO_COMMA_AND_QUOTED), NO_COMMA_AND_QUOTED]
    assert score_batch(prompts, ['"x"', "x, y"], "strict_fraction") == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_batch(prompts, ["x"])
    with pytest.raises(ValueError):
        score_batch(prompts, ["x", "y"], "strictest")


def _workload(limit: int):
    prompts, responses = [], []
    with open(ifeval_input_path(), encoding="utf-8") as f:
        for index, line in enumerate(f):
            record = json.loads(line)
            constraints = build_constraints(record["instruction_id_list"], record["kwargs"],
                                            f"sample {index}")
            for response in responses_for(record["prompt"], record["instruction_id_list"],
                                          record["kwargs"]):
                prompts.append(Prompt(constraints))
                responses.append(response)
            if len(responses) >= limit:
                return prompts[:limit], responses[:limit]
    return prompts, responses


@pytest.mark.slow
def test_pool_matches_serial_including_types_registered_outside_the_package():
    from test_rewards_registry import min_lines  # noqa: F401  registers test:min_lines

    prompts, responses = _workload(400)
    prompts.append(Prompt(build_constraints(["test:min_lines"], [{"min_lines": 2}], "t")))
    responses.append("one\ntwo")
    with RewardPool(2, min_batch=1) as pool:
        for mode in ("strict", "loose_fraction"):
            expected = score_batch(prompts, responses, mode)
            assert pool.score(prompts, responses, mode) == expected
            assert 0.0 < sum(expected) / len(expected) < 1.0
        assert pool.score(prompts[-1:], responses[-1:]) == [1.0]


@pytest.mark.slow
def test_benchmark_runs_and_checks_pool_against_serial(capsys):
    from benchmarks import rewards

    assert rewards.main(["--num", "300", "--workers", "1", "--mode", "loose"]) == 0
    out = capsys.readouterr().out
    assert "300 responses" in out and "ratio pool/serial" in out


def test_score_samples_fills_named_rewards_and_names_bad_samples():
    from megatron_uniapl.algorithm.scoring import score_samples
    from megatron_uniapl.data.sample import Sample, SampleKind

    def sample(text, constraints=NO_COMMA_AND_QUOTED):
        return Sample(prompt_ids=[1], response_ids=[2], kind=SampleKind.ROLLOUT,
                      response_text=text, meta={"constraints": constraints})

    samples = [sample('"a"'), sample('"a, b"'), sample('Ok:\n"a"')]
    assert score_samples(samples, "loose_fraction") == [1.0, 0.5, 1.0]
    assert [s.rewards["task"] for s in samples] == [1.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="sample 1: response_text: missing"):
        score_samples([sample('"a"'), sample(None)])
    with pytest.raises(ValueError, match=r"sample 0: meta\['constraints'\]: expected"):
        score_samples([sample('"a"', constraints=None)])
