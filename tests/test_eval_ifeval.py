"""IFEval accuracies on a hand-worked example."""

from __future__ import annotations

import pytest

from megatron_uniapl.eval.ifeval import evaluate
from megatron_uniapl.rewards.registry import build_constraints


def test_accuracies_by_hand():
    prompts = [
        build_constraints(["punctuation:no_comma", "startend:quotation"], None, "a"),
        build_constraints(["length_constraints:number_words"],
                          [{"num_words": 2, "relation": "less than"}], "b"),
    ]
    # Prompt a: no comma holds; quotation only without the first line (loose).
    # Prompt b: two words are not fewer than two, in any variant.
    report = evaluate(prompts, ['Sure:\n"hello"', "one two"])
    assert (report.num_prompts, report.num_instructions) == (2, 3)
    assert report.prompt_strict == 0.0 and report.prompt_loose == 0.5
    assert report.instruction_strict == pytest.approx(1 / 3)
    assert report.instruction_loose == pytest.approx(2 / 3)
    assert report.per_type == {
        "length_constraints:number_words": {"count": 1, "strict": 0.0, "loose": 0.0},
        "punctuation:no_comma": {"count": 1, "strict": 1.0, "loose": 1.0},
        "startend:quotation": {"count": 1, "strict": 0.0, "loose": 1.0},
    }
    assert report.to_dict()["prompt_loose"] == 0.5


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        evaluate([build_constraints(["punctuation:no_comma"], None, "a")], ["x", "y"])


def test_cli_on_saved_responses(tmp_path, capsys):
    import json

    from megatron_uniapl.eval.ifeval import main

    prompts = tmp_path / "input.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"key": 1, "prompt": "a", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "b", "instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
    ]))
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"prompt": "a", "response": "x, y"}) + "\n"
                         + json.dumps({"prompt": "b", "response": 'Ok:\n"x"'}) + "\n")
    out = tmp_path / "report.json"
    assert main(["--prompts", str(prompts), "--responses", str(responses), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["prompt_strict"], report["prompt_loose"]) == (0.0, 0.5)
    assert "prompt-level strict 0.0000  loose 0.5000" in capsys.readouterr().out
    responses.write_text(json.dumps({"prompt": "a", "response": "x"}) + "\n")
    assert main(["--prompts", str(prompts), "--responses", str(responses)]) == 2
    assert "no response for 1 prompts (keys [2]" in capsys.readouterr().out
