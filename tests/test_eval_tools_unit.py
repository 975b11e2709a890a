"""The eval and demo tools without an engine: resume bookkeeping, sample choice, batching and
seeds, input errors, and the markdown table. The engine paths are in test_eval_tools_engine.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.schemas import parse_rl_prompt
from megatron_uniapl.eval import run as eval_run
from megatron_uniapl.eval.tables import results_markdown
from megatron_uniapl.rollout.chat_generation import check_lengths, generate_in_batches
from megatron_uniapl.rollout.engine import Generation
from megatron_uniapl.teacher import record_log
from megatron_uniapl.teacher.generate import DemoConfig, choose, read_prompts


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_partial_last_line_is_dropped_and_complete_lines_kept(tmp_path):
    path = tmp_path / "demos.jsonl"
    good = '{"prompt": "a", "response": "b", "id": "1"}\n'
    path.write_text(good + '{"prompt": "c", "resp', encoding="utf-8")
    assert record_log.drop_partial_last_line(path) == len('{"prompt": "c", "resp')
    assert path.read_text(encoding="utf-8") == good
    assert record_log.drop_partial_last_line(path) == 0  # a clean file is left alone
    one_partial = tmp_path / "one.jsonl"
    one_partial.write_text('{"id": "x"', encoding="utf-8")
    assert record_log.drop_partial_last_line(one_partial) == 10 and one_partial.read_text() == ""
    assert record_log.drop_partial_last_line(tmp_path / "absent.jsonl") == 0


def test_read_keys_rejects_missing_and_repeated_keys(tmp_path):
    ok = write_lines(tmp_path / "ok.jsonl", [{"id": "1"}, {"id": "b"}])
    assert list(record_log.read_keys(ok, "id")) == ["1", "b"]
    with ok.open("a") as f:  # another rank may read while the writer cuts a partial line off
        f.write('{"id": "c", "resp')
    assert list(record_log.read_keys(ok, "id")) == ["1", "b"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "1"}\n{"id": \n{"id": "2"}\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: invalid JSON"):
        record_log.read_keys(broken, "id")
    repeated = write_lines(tmp_path / "rep.jsonl", [{"id": "1"}, {"id": "1"}])
    with pytest.raises(DataError, match=r"rep.jsonl:2: id: '1' appears twice"):
        record_log.read_keys(repeated, "id")
    keyless = write_lines(tmp_path / "nokey.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(DataError, match=r"nokey.jsonl:1: id: missing"):
        record_log.read_keys(keyless, "id")


def test_prompt_keys_and_repeats(tmp_path):
    rec = {"prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"]}
    path = write_lines(tmp_path / "p.jsonl", [dict(rec, key=7), rec, rec, dict(rec, prompt="Other.")])
    keys = [key for key, _ in read_prompts(path, None)]
    # key 7, then the hash of "Say hi." once (the repeat is dropped), then "Other."
    assert keys[0] == "7" and len(keys) == 3 and keys[1].startswith("sha256:") and keys[1] != keys[2]
    assert [key for key, _ in read_prompts(path, 2)] == keys[:2]
    dup = write_lines(tmp_path / "dup.jsonl", [dict(rec, key=7), dict(rec, key=7, prompt="x")])
    with pytest.raises(DataError, match=r"dup.jsonl:2: key: 7 was already used at .*dup.jsonl:1"):
        read_prompts(dup, None)
    bad = write_lines(tmp_path / "bad.jsonl", [rec, {"prompt": "x", "instruction_id_list": ["nope:x"]}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*nope:x"):
        read_prompts(bad, None)


def _gen(text: str, finish: str = "stop") -> Generation:
    return Generation(0, [1], [-0.5], text, finish)


def test_choose_keeps_first_acceptable_sample(tmp_path):
    prompt = parse_rl_prompt({"prompt": "p", "instruction_id_list": ["punctuation:no_comma"]}, "t:1")
    samples = [_gen("a, b"), _gen("no commas here", "length"), _gen("clean one"), _gen("clean two")]
    cfg = DemoConfig(Path("t"), Path("p"), Path("o"), filter="strict")
    chosen, counts = choose(prompt, samples, cfg)
    assert chosen == "clean one"  # [1] passes but was truncated
    assert counts == {"samples": 4, "passing": 3, "truncated": 1, "kept": True}
    cfg.keep_truncated = True
    assert choose(prompt, samples, cfg)[0] == "no commas here"
    cfg.filter = None
    assert choose(prompt, samples, cfg)[0] == "a, b"
    cfg.filter = "strict"
    chosen, counts = choose(prompt, [_gen("x, y"), _gen("")], cfg)
    assert chosen is None and counts == {"samples": 2, "passing": 0, "truncated": 0, "kept": False}
    # a reasoning block is removed before the check: its comma does not count, and it is not kept
    chosen, counts = choose(prompt, [_gen("<think>\nhm, well\n</think>\n\nclean answer")], cfg)
    assert chosen == "clean answer" and counts["passing"] == 1
    # only a think block and nothing after it: blank, never kept even without a filter
    cfg.filter = None
    assert choose(prompt, [_gen("<think>a</think>\n")], cfg)[0] is None


class RecordingEngine:
    """Records what generate_in_batches asks for; answers with placeholder generations."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, sampling):
        self.calls.append(([ids[0] for ids in prompt_ids], sampling.seed, sampling.n))
        return [
            Generation(i, [9], [-1.0], f"{ids[0]}/{k}", "stop")
            for i, ids in enumerate(prompt_ids)
            for k in range(sampling.n)
        ]


def test_batches_are_fixed_slices_with_positional_seeds():
    engine = RecordingEngine()
    prompts = [[100 + i] for i in range(7)]
    out = list(
        generate_in_batches(
            engine,
            prompts,
            SamplingConfig(n=2, seed=10),
            batch_size=3,
            skip=lambda i: i in (1, 3, 4, 5),
            progress=False,
        )
    )
    # batch [0,3) without 1; batch [3,6) fully skipped (no call); batch [6,7)
    assert engine.calls == [([100, 102], 10, 2), ([106], 16, 2)]
    assert [indices for indices, _ in out] == [[0, 2], [6]]
    assert [[g.text for g in s] for s in out[0][1]] == [["100/0", "100/1"], ["102/0", "102/1"]]


def test_length_check_names_the_prompt():
    check_lengths([[1] * 10], ["'a'"], max_tokens=6, max_model_len=16)
    with pytest.raises(ValueError, match=r"prompt 'b': 11 tokens \+ max_tokens 6 exceed max_model_len 16"):
        check_lengths([[1] * 10, [1] * 11], ["'a'", "'b'"], max_tokens=6, max_model_len=16)


def test_eval_input_errors_are_clear(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    bad_eval = tmp_path / "bad.jsonl"
    bad_eval.write_text(
        json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})
        + "\n{not json\n",
        encoding="utf-8",
    )
    args = ["--eval-file", str(bad_eval), "--out", str(tmp_path / "o"), "--model", str(model)]
    assert eval_run.main(args) == 2
    assert f"{bad_eval}:2: invalid JSON" in capsys.readouterr().out
    assert (
        eval_run.main(["--eval-file", str(tmp_path / "none.jsonl"), "--out", "o", "--model", str(model)]) == 2
    )
    assert "none.jsonl: no such file" in capsys.readouterr().out
    good_eval = write_lines(
        tmp_path / "good.jsonl",
        [{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}],
    )
    for where, expected in (
        (tmp_path / "absent", "no such model directory"),
        (model, "neither config.json (Hugging Face) nor uniapl_model.json"),
    ):
        assert eval_run.main(["--eval-file", str(good_eval), "--out", "o", "--model", str(where)]) == 2
        assert expected in capsys.readouterr().out
    (model / "config.json").write_text("{}")
    assert eval_run.main(["--eval-file", str(good_eval), "--out", "o", "--model", str(model)]) == 2
    assert f"{model}: no tokenizer files" in capsys.readouterr().out
    assert (
        eval_run.main(["--eval-file", str(good_eval), "--out", "o", "--model", str(model), "--limit", "0"])
        == 2
    )
    assert "--limit must be >= 1" in capsys.readouterr().out


def test_markdown_table_from_results():
    results = {
        "model": "m",
        "eval_file": "e.jsonl",
        "num_prompts": 2,
        "num_instructions": 3,
        "prompt_strict": 0.5,
        "prompt_loose": 1.0,
        "instruction_strict": 2 / 3,
        "instruction_loose": 1.0,
        "sampling": {"temperature": 0.0, "max_tokens": 8},
        "finish_reasons": {"stop": 2},
        "per_type": {"punctuation:no_comma": {"count": 3, "strict": 2 / 3, "loose": 1.0}},
    }
    text = results_markdown(results)
    assert "| prompt-level | 50.00 | 100.00 |" in text
    assert "| instruction-level | 66.67 | 100.00 |" in text
    assert "| punctuation:no_comma | 3 | 66.67 | 100.00 |" in text
    assert "greedy, at most 8 tokens" in text
