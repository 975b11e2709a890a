"""JSONL schemas: the formats load, and every kind of bad record is reported as
`file:line: field: problem`."""

from __future__ import annotations

import json

import pytest

from megatron_uniapl.assets import ifeval_input_path
from megatron_uniapl.data.jsonl import DataError, read_jsonl
from megatron_uniapl.data.schemas import (
    ChatMessage,
    read_demonstrations,
    read_eval_set,
    read_rl_prompts,
)
from megatron_uniapl.rewards.reward import score


def _write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line)
                              for line in lines) + "\n", encoding="utf-8")
    return path


def test_ifeval_file_loads_as_eval_set_and_as_rl_prompts():
    evals = read_eval_set(ifeval_input_path())
    rl = read_rl_prompts(ifeval_input_path())
    assert len(evals) == len(rl) == 541
    assert evals[0].key == 1000 and rl[0].reference_response is None
    assert [c.instruction_id for c in rl[0].constraints] == list(rl[0].instruction_id_list)
    assert sum(len(p.constraints) for p in evals) == 834


def test_demonstrations_from_prompt_or_messages(tmp_path):
    path = _write(tmp_path, [
        {"prompt": "Name a prime.", "response": "7", "id": 3},
        "",
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Name a prime."}], "response": "7"},
    ])
    first, second = read_demonstrations(path)
    assert first.messages == (ChatMessage("user", "Name a prime."),) and first.id == "3"
    assert second.messages[0] == ChatMessage("system", "Be brief.")
    assert second.prompt == "Name a prime." and second.response == "7" and second.id is None


def test_rl_prompt_with_reference_and_hugging_face_null_kwargs(tmp_path):
    path = _write(tmp_path, [
        {"prompt": "Say hi without commas.", "instruction_id_list": ["punctuation:no_comma"],
         "reference_response": "Hi there"},
        {"prompt": "p", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"num_words": 2, "relation": "less than", "keywords": None}], "key": "b"},
    ])
    first, second = read_rl_prompts(path)
    assert first.reference_response == "Hi there" and first.kwargs == ({},)
    assert score(first, "Hi there") == 1.0 and score(first, "Hi, there") == 0.0
    assert second.key == "b" and score(second, "one") == 1.0 and score(second, "one two") == 0.0


GOOD_DEMO = {"prompt": "q", "response": "a"}
GOOD_RL = {"prompt": "q", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
GOOD_EVAL = {"key": 1, **GOOD_RL}


@pytest.mark.parametrize("reader,bad,message", [
    (read_demonstrations, "{not json", "data.jsonl:2: invalid JSON"),
    (read_demonstrations, "[1, 2]", "data.jsonl:2: expected a JSON object, got list"),
    (read_demonstrations, {"prompt": "q"}, "data.jsonl:2: response: missing"),
    (read_demonstrations, {"prompt": "q", "response": "a", "answer": "b"},
     "data.jsonl:2: answer: unknown field"),
    (read_demonstrations, {"response": "a"}, "data.jsonl:2: prompt: give exactly one of prompt or messages"),
    (read_demonstrations, {"prompt": "q", "messages": [], "response": "a"},
     "data.jsonl:2: prompt: give exactly one"),
    (read_demonstrations, {"prompt": "  ", "response": "a"}, "data.jsonl:2: prompt: must not be blank"),
    (read_demonstrations, {"prompt": "q", "response": 7}, "data.jsonl:2: response: expected a string, got int"),
    (read_demonstrations, {"messages": [], "response": "a"},
     "data.jsonl:2: messages: expected a non-empty list"),
    (read_demonstrations, {"messages": [{"role": "robot", "content": "x"}], "response": "a"},
     "data.jsonl:2: messages[0].role: must be one of"),
    (read_demonstrations, {"messages": [{"role": "user"}], "response": "a"},
     "data.jsonl:2: messages[0]: content: missing"),
    (read_demonstrations, {"messages": [{"role": "user", "content": ["x"]}], "response": "a"},
     "data.jsonl:2: messages[0].content: expected a string, got list"),
    (read_demonstrations, {"messages": [{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": "a"}], "response": "a"},
     "data.jsonl:2: messages[1].role: the last message must be the user's"),
    (read_demonstrations, {"prompt": "q", "response": "a", "id": [1]}, "data.jsonl:2: id: expected"),
    (read_rl_prompts, {"prompt": "q"}, "data.jsonl:2: instruction_id_list: missing"),
    (read_rl_prompts, {**GOOD_RL, "instruction_id_list": ["keywords:nope"]},
     "data.jsonl:2: instruction_id_list[0]: unknown constraint type 'keywords:nope'"),
    (read_rl_prompts, {**GOOD_RL, "instruction_id_list": ["length_constraints:number_words"],
                       "kwargs": [{"num_words": "9", "relation": "at least"}]},
     "data.jsonl:2: kwargs[0].num_words: expected int, got '9'"),
    (read_rl_prompts, {**GOOD_RL, "kwargs": [{}, {}]}, "data.jsonl:2: kwargs: must be a list parallel"),
    (read_rl_prompts, {**GOOD_RL, "reference_response": 3},
     "data.jsonl:2: reference_response: expected a string, got int"),
    (read_rl_prompts, {**GOOD_RL, "reference": "a"}, "data.jsonl:2: reference: unknown field"),
    (read_rl_prompts, {**GOOD_RL, "key": True}, "data.jsonl:2: key: expected a string or integer"),
    (read_eval_set, GOOD_RL, "data.jsonl:2: key: missing"),
    (read_eval_set, {**GOOD_EVAL, "key": None}, "data.jsonl:2: key: must not be null"),
    (read_eval_set, {**GOOD_EVAL, "reference_response": "a"},
     "data.jsonl:2: reference_response: unknown field"),
    (read_eval_set, {**GOOD_EVAL, "key": 0}, "data.jsonl:2: key: 0 was already used at"),
])
def test_bad_record_on_line_two_is_named(tmp_path, reader, bad, message):
    good = {read_demonstrations: GOOD_DEMO, read_rl_prompts: GOOD_RL,
            read_eval_set: {**GOOD_EVAL, "key": 0}}[reader]
    path = _write(tmp_path, [good, bad, good if reader is not read_eval_set else GOOD_EVAL])
    with pytest.raises(DataError) as error:
        reader(path)
    assert str(error.value).startswith(f"{path}:2: {message.removeprefix('data.jsonl:2: ')}")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_demonstrations(tmp_path / "absent.jsonl")
    empty = _write(tmp_path, ["", "  "])
    with pytest.raises(DataError, match="no records"):
        read_rl_prompts(empty)
    assert read_jsonl(empty, lambda record, where: record, allow_empty=True) == []
