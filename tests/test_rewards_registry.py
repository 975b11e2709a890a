"""The constraint registry: clear errors for unknown types and bad kwargs, the IFEval formats
(compact and Hugging Face's all-keys-with-null), and new types joining from outside."""

from __future__ import annotations

import pytest

from megatron_uniapl.rewards.registry import (
    ConstraintError,
    Kwarg,
    build_constraints,
    describe,
    register,
    registered,
)
from megatron_uniapl.rewards.verify import follow_list


@register("test:min_lines", Kwarg("min_lines", int, "minimum number of lines",
                                  lambda v: "must be >= 1" if v < 1 else None))
def min_lines(response: str, *, min_lines: int) -> bool:
    """At least `min_lines` non-blank lines (a type defined outside the package)."""
    return sum(1 for line in response.splitlines() if line.strip()) >= min_lines


def test_a_new_type_joins_without_touching_the_core():
    constraints = build_constraints(["test:min_lines", "punctuation:no_comma"],
                                    [{"min_lines": 2}, {}], "sample 0")
    assert follow_list(constraints, "one\ntwo") == [True, True]
    assert follow_list(constraints, "one, two") == [False, False]
    assert "test:min_lines(min_lines: int): At least `min_lines` non-blank lines" in describe()


def test_registering_another_checker_under_a_taken_id_fails():
    with pytest.raises(ValueError, match="already registered"):
        register("test:min_lines")(lambda response: True)
    with pytest.raises(ValueError, match="family:name"):
        register("nocolon")(lambda response: True)


def test_hugging_face_format_with_null_kwargs_is_accepted():
    hf_kwargs = {"num_highlights": None, "relation": "at least", "num_words": 3, "keywords": None}
    constraints = build_constraints(["length_constraints:number_words"], [hf_kwargs], "x")
    assert constraints[0].kwargs == {"num_words": 3, "relation": "at least"}
    assert build_constraints(["punctuation:no_comma"], None, "x")[0].kwargs == {}


@pytest.mark.parametrize("ids,kwargs,message", [
    (["keywords:nope"], [{}],
     "data.jsonl:7: instruction_id_list[0]: unknown constraint type 'keywords:nope'"),
    ([3], [{}], "data.jsonl:7: instruction_id_list[0]: must be a string"),
    ([], [], "data.jsonl:7: instruction_id_list: must be a non-empty list"),
    (["punctuation:no_comma"], [{}, {}],
     "data.jsonl:7: kwargs: must be a list parallel to instruction_id_list (1 entries), got 2"),
    (["punctuation:no_comma", "startend:quotation"], [{}, "x"],
     "data.jsonl:7: kwargs[1]: must be an object"),
    (["length_constraints:number_words"], [{"relation": "at least"}],
     "data.jsonl:7: kwargs[0].num_words: missing"),
    (["length_constraints:number_words"], [{"num_words": "300", "relation": "at least"}],
     "data.jsonl:7: kwargs[0].num_words: expected int, got '300'"),
    (["length_constraints:number_words"], [{"num_words": True, "relation": "at least"}],
     "data.jsonl:7: kwargs[0].num_words: expected int, got True"),
    (["length_constraints:number_words"], [{"num_words": -1, "relation": "at least"}],
     "data.jsonl:7: kwargs[0].num_words: must be >= 0 (got -1)"),
    (["length_constraints:number_words"], [{"num_words": 3, "relation": "at most"}],
     "data.jsonl:7: kwargs[0].relation: must be one of ('less than', 'at least')"),
    (["punctuation:no_comma"], [{"num_words": 3}],
     "data.jsonl:7: kwargs[0].num_words: not an argument of punctuation:no_comma"),
    (["keywords:existence"], [{"keywords": []}],
     "data.jsonl:7: kwargs[0].keywords: must list at least one keyword"),
    (["keywords:existence"], [{"keywords": ["ok", 3]}],
     "data.jsonl:7: kwargs[0].keywords: expected a list of strings"),
    (["keywords:existence"], [{"keywords": ["a(b"]}],
     "data.jsonl:7: kwargs[0].keywords: keyword 'a(b' is matched as a regular expression"),
    (["keywords:letter_frequency"], [{"letter": "ab", "let_frequency": 1,
                                      "let_relation": "at least"}],
     "data.jsonl:7: kwargs[0].letter: must be a single non-space character"),
    (["language:response_language"], [{"language": "klingon"}],
     "data.jsonl:7: kwargs[0].language: is not a code the language detector returns"),
    (["length_constraints:nth_paragraph_first_word"],
     [{"num_paragraphs": 2, "nth_paragraph": 0, "first_word": "so"}],
     "data.jsonl:7: kwargs[0].nth_paragraph: must be >= 1"),
    (["length_constraints:nth_paragraph_first_word"],
     [{"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"}],
     "data.jsonl:7: kwargs[0].nth_paragraph: is 3, beyond num_paragraphs (2)"),
    (["startend:end_checker"], [{"end_phrase": "   "}],
     "data.jsonl:7: kwargs[0].end_phrase: must not be empty"),
    (["test:min_lines"], [{"min_lines": 0}], "data.jsonl:7: kwargs[0].min_lines: must be >= 1"),
])
def test_bad_constraints_name_the_record_and_field(ids, kwargs, message):
    with pytest.raises(ConstraintError) as error:
        build_constraints(ids, kwargs, "data.jsonl:7")
    assert str(error.value).startswith(message), str(error.value)


def test_registry_lists_the_25_ifeval_types():
    families = {i.split(":")[0] for i in registered() if not i.startswith("test:")}
    assert families == {"keywords", "language", "change_case", "punctuation", "detectable_format",
                        "detectable_content", "length_constraints", "combination", "startend"}
    assert sum(1 for i in registered() if not i.startswith("test:")) == 25


def test_importing_the_reward_and_data_modules_loads_no_models():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}

    code = ("import sys, megatron_uniapl.rewards.reward, megatron_uniapl.data.schemas, "
            "megatron_uniapl.eval.ifeval; "
            "print(sorted(m for m in ('nltk', 'langdetect', 'punkt', 'torch', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env, cwd=root)
    assert out.stdout.strip() == "[]"
