"""Decontamination by n-gram overlap of the instruction: IFEval's own prompts are caught, the
example source (AlpacaEval's 805 instructions) is clean, near-copies of an eval request are
caught, and shared constraint wording alone does not count as overlap."""

from __future__ import annotations

import json

import pytest

from megatron_uniapl.assets import ifeval_input_path
from megatron_uniapl.dataprep import decontam, instructions
from megatron_uniapl.rewards import text

HITS_OF_WHOLE_PROMPT = 4
IFEVAL_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"


@pytest.fixture(scope="module")
def ifeval():
    return decontam.read_eval_set("asset:ifeval", ifeval_input_path())


@pytest.fixture(scope="module")
def index(ifeval):
    return decontam.EvalIndex([ifeval], decontam.DecontamConfig())


def test_ifeval_set(ifeval, index):
    assert len(ifeval.prompts) == 541 and ifeval.sha256 == IFEVAL_SHA256
    assert index.manifest()["eval_sets"][0]["sha256"] == IFEVAL_SHA256
    assert len(index.boilerplate) == 909


def test_ifeval_prompts_are_all_caught(ifeval, index):
    assert sum(index.match(prompt) is not None for _, prompt in ifeval.prompts) == 541


def test_alpaca_eval_instructions_are_clean(index):
    source = instructions.read_instructions("asset:alpaca_eval")
    assert len(source) == 805
    assert [i.text for i in source if index.match(i.text)] == []
    assert sum(len(decontam.words(i.text)) < index.config.n for i in source) == 26


def test_near_copies_of_eval_requests_are_caught(ifeval, index):
    # The first sentence of an IFEval prompt, re-cased and re-punctuated, as a training request.
    caught = 0
    for key, prompt in ifeval.prompts:
        first = text.split_sentences(prompt)[0]
        if len(decontam.words(first)) < index.config.n:
            continue
        match = index.match(first.upper().replace(",", " ;"))
        caught += match is not None and match.key == key or (match is not None and match.overlap == 1.0)
    assert caught == 522


def test_constraint_wording_alone_is_not_overlap(ifeval, index):
    # A new request with IFEval's own constraint sentence appended shares many n-grams with
    # IFEval prompts; only the boilerplate removal keeps it in.
    wording = ("Your answer must contain a title, wrapped in double angular brackets, i.e. <<title>>. "
               "Wrap your entire response with double quotation marks.")
    request = "Describe the smell of rain on a summer evening to someone who has never noticed it."
    assert index.match(request + " " + wording) is None
    raw = decontam.ngrams(decontam.words(request + " " + wording), index.config.n)
    hits = [key for key, prompt in ifeval.prompts
            if len(raw & decontam.ngrams(decontam.words(prompt), index.config.n)) >= 0.25 * len(raw)]
    assert len(hits) == HITS_OF_WHOLE_PROMPT  # what a whole-prompt comparison would have flagged


def test_short_instructions_match_only_exactly(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"key": 7, "prompt": "Tell me a joke."}) + "\n"
                    + json.dumps({"key": 8, "prompt": "Write a poem about the sea and the sky at night please."})
                    + "\n")
    index = decontam.EvalIndex([decontam.read_eval_set("mine", path)], decontam.DecontamConfig())
    assert index.match("tell me a JOKE!") == decontam.Match("mine", "7", 1.0, "exact")
    assert index.match("Tell me a joke about cats.") is None
    match = index.match("Please write a poem about the sea and the sky at night.")
    assert match.key == "8" and match.kind == "ngram" and match.overlap >= 0.5


def test_eval_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1, "prompt": "ok"}\n{"key": 2}\n')
    with pytest.raises(instructions.DataError, match=r"bad.jsonl:2: prompt: missing"):
        decontam.read_eval_set("bad", bad)
    with pytest.raises(ValueError, match="threshold"):
        decontam.DecontamConfig(threshold=0).validate()
