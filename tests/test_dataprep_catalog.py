"""The constraint catalog: every registry type is drawable with valid kwargs and rendered with
its values, and the word lists keep the properties the satisfiability argument rests on."""

from __future__ import annotations

import random
import re

import pytest

from megatron_uniapl.dataprep import builder, catalog, vocab
from megatron_uniapl.rewards import text
from megatron_uniapl.rewards.registry import build_constraints, registered

INSTRUCTION = "Describe a quiet morning in a small fishing town."


def test_catalog_covers_exactly_the_registry():
    # tests/test_rewards_registry.py registers a type of its own ("test:..."), as a user would
    assert set(catalog.SPECS) == {iid for iid in registered() if not iid.startswith("test:")}
    assert len(catalog.SPECS) == 25


@pytest.mark.parametrize("iid", sorted(catalog.SPECS))
def test_draws_are_valid_and_rendered_with_their_values(iid):
    spec = catalog.SPECS[iid]
    rng = random.Random(iid)
    for _ in range(40):
        kwargs = spec.sample(rng, INSTRUCTION)
        build_constraints([iid], [kwargs], "draw")  # raises on an invalid value
        sentence = spec.render(kwargs, rng)
        for key, value in kwargs.items():
            if key == "prompt_to_repeat":
                continue
            for item in value if isinstance(value, list) else [value]:
                shown = vocab.LANGUAGE_NAMES[item] if key == "language" else str(item)
                assert shown in sentence, (iid, key, shown, sentence)
        assert len(spec.phrasings) >= 2


def test_ranges_of_limited_draws():
    rng = random.Random(0)
    letters = [catalog.SPECS["keywords:letter_frequency"].sample(rng, INSTRUCTION) for _ in range(400)]
    less = [d for d in letters if d["let_relation"] == "less than"]
    assert less and {d["letter"] for d in less} <= set(vocab.RARE_LETTERS)
    assert all(d["let_frequency"] <= 10 for d in letters if d["letter"] in vocab.RARE_LETTERS)
    languages = {catalog.SPECS["language:response_language"].sample(rng, INSTRUCTION)["language"] for _ in range(400)}
    assert languages == set(vocab.LANGUAGE_NAMES) and "en" not in languages


def test_repeat_prompt_is_drawn_only_for_short_one_line_requests():
    spec = catalog.SPECS["combination:repeat_prompt"]
    assert spec.eligible(INSTRUCTION)
    assert spec.sample(random.Random(0), "  " + INSTRUCTION + " ") == {"prompt_to_repeat": INSTRUCTION}
    assert not spec.eligible("First line.\nSecond line.")
    assert not spec.eligible(" ".join(["word"] * (catalog.REPEAT_MAX_WORDS + 1)))
    assert spec.eligible(" ".join(["word"] * catalog.REPEAT_MAX_WORDS))
    assert not spec.eligible("Rate *this* text.")
    assert not spec.eligible("- a list item")


def test_quoted_list():
    assert catalog.quoted_list(["a"]) == '"a"'
    assert catalog.quoted_list(["a", "b"]) == '"a" and "b"'
    assert catalog.quoted_list(["a", "b", "c"]) == '"a", "b" and "c"'


def _fixed_texts() -> list[str]:
    return [*vocab.FILLER, *vocab.END_PHRASES, *vocab.FIRST_WORDS, *vocab.CAPITAL_WORDS,
            vocab.CONSTRAINED_ANSWER, *vocab.SECTION_SPLITTERS, *vocab.POSTSCRIPT_MARKERS,
            *(w for words in vocab.LETTER_WORDS.values() for w in words)]


def test_keywords_never_occur_in_other_text():
    # keywords:existence and keywords:frequency match anywhere, case-insensitively: a keyword
    # inside the filler would break "less than" counts and forbidden words.
    for keyword in vocab.KEYWORDS:
        for other in _fixed_texts():
            assert keyword not in other.lower(), (keyword, other)
        for other in vocab.KEYWORDS:
            assert other == keyword or keyword not in other, (keyword, other)
    assert len(set(vocab.KEYWORDS)) == len(vocab.KEYWORDS) == 50


def test_filler_is_plain():
    for sentence in vocab.FILLER:
        assert "," not in sentence and "*" not in sentence and sentence.endswith(".")
        assert not set(sentence.lower()) & set(vocab.RARE_LETTERS), sentence
        assert not [t for t in text.word_tokens(sentence) if t.isupper()], sentence
        assert not re.search(r"\d", sentence)
        assert text.detect_language(sentence) == "en"


def test_letter_words():
    assert set(vocab.LETTER_WORDS) == set("abcdefghijklmnopqrstuvwxyz")
    for letter, words in vocab.LETTER_WORDS.items():
        for word in words:
            assert letter in word
            rare = set(word) & set(vocab.RARE_LETTERS)
            assert rare <= {letter}, (letter, word)


def test_instruction_rng_depends_only_on_seed_copy_and_text():
    a = builder.instruction_rng(0, INSTRUCTION).random()
    assert a == builder.instruction_rng(0, INSTRUCTION).random()
    assert a != builder.instruction_rng(1, INSTRUCTION).random()
    assert a != builder.instruction_rng(0, INSTRUCTION, copy=1).random()
    assert a != builder.instruction_rng(0, INSTRUCTION + "!").random()
