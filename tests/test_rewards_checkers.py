"""Each IFEval checker on hand-worked cases: boundaries, quirks, unicode, markdown, blank and
very long responses. Expected values are worked out from the IFEval definitions by hand."""

from __future__ import annotations

import pytest

from megatron_uniapl.rewards.registry import build_constraint, registered
from megatron_uniapl.rewards.verify import follow_list, loose_variants

VALID_KWARGS = {
    "keywords:existence": {"keywords": ["café", "tea"]},
    "keywords:frequency": {"keyword": "ai", "frequency": 2, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["cat"]},
    "keywords:letter_frequency": {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
    "language:response_language": {"language": "de"},
    "change_case:capital_word_frequency": {"capital_frequency": 2, "capital_relation": "at least"},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "SECTION", "num_sections": 2},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "length_constraints:number_sentences": {"num_sentences": 2, "relation": "at least"},
    "length_constraints:number_words": {"num_words": 4, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 2, "nth_paragraph": 2,
                                                    "first_word": "Then"},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": "Write a poem."},
    "startend:end_checker": {"end_phrase": " Any other questions? "},
    "startend:quotation": {},
}

CASES = [
    # (id, kwargs override or None, response, expected strict verdict)
    ("keywords:existence", None, "Un CAFÉ noir and green TEA", True),
    ("keywords:existence", None, "Un café noir", False),
    ("keywords:existence", {"keywords": ["art"]}, "a fresh start", True),  # regex, no boundaries
    ("keywords:frequency", None, "AI and ai", True),
    ("keywords:frequency", None, "AI only", False),
    ("keywords:frequency", {"keyword": "ai", "frequency": 2, "relation": "less than"}, "AI", True),
    ("keywords:forbidden_words", None, "concatenate", True),
    ("keywords:forbidden_words", None, "The Cat sat", False),
    ("keywords:forbidden_words", None, "Ñcat", True),  # Ñ is a word character: no boundary
    ("keywords:letter_frequency", None, "Eee", False),  # 3 is not less than 3
    ("keywords:letter_frequency", None, "ée", True),  # é is not e
    ("language:response_language", None,
     "Das Wetter ist heute sehr schön und wir gehen im Park spazieren.", True),
    ("language:response_language", None, "The weather is lovely today and we walk in the park.",
     False),
    ("language:response_language", None, "12345 !!!", True),  # nothing detectable passes
    ("change_case:capital_word_frequency", None, "HELLO WORLD", True),
    ("change_case:capital_word_frequency", None, "I DON'T", True),  # I, DO, N'T: three tokens
    ("change_case:capital_word_frequency", None, "Hello World", False),
    ("change_case:english_capital", None, "HELLO WORLD THIS IS A SHORT ENGLISH SENTENCE", True),
    ("change_case:english_capital", None, "HELLO world this is a short English sentence", False),
    ("change_case:english_capital", None, "12345", False),  # no cased character
    ("change_case:english_capital", None, "L'ÉTÉ EST TRÈS CHAUD À PARIS CETTE ANNÉE", False),
    ("change_case:english_lowercase", None, "hello world this is a short english sentence", True),
    ("change_case:english_lowercase", None, "hello World this is a short english sentence", False),
    ("punctuation:no_comma", None, "a，b", True),  # a full-width comma is not ','
    ("punctuation:no_comma", None, "a, b", False),
    ("detectable_format:number_bullet_lists", None, "* a\n* b\n- c", True),
    ("detectable_format:number_bullet_lists", None, "**bold**\n* a\n  * b\n---", True),  # rule
    ("detectable_format:number_bullet_lists", None, "* a\n* b", False),
    ("detectable_format:constrained_response", None, "  My answer is yes. ", True),
    ("detectable_format:constrained_response", None, "my answer is yes.", False),
    ("detectable_format:number_highlighted_sections", None, "*a* and **b**", True),  # 1 + 1
    ("detectable_format:number_highlighted_sections", None, "*a* and ** **", False),
    ("detectable_format:number_highlighted_sections", None, "*a\nb* *c*", False),  # one line only
    ("detectable_format:multiple_sections", None, "SECTION 1\nfoo\nSECTION 2\nbar", True),
    ("detectable_format:multiple_sections", None, "Section 1\nfoo\nSection 2\nbar", False),
    ("detectable_format:json_format", None, '```json\n{"a": [1, 2], "ü": "ß"}\n```', True),
    ("detectable_format:json_format", None, "```\n[1]\n```", True),
    ("detectable_format:json_format", None, "{'a': 1}", False),
    ("detectable_format:json_format", None, "[" * 100_000 + "]" * 100_000, False),  # too deep
    ("detectable_format:title", None, "<<Ode to Joy>>\nverse", True),
    ("detectable_format:title", None, "<< >>\nverse", False),
    ("detectable_format:title", None, "<<Ode\nto Joy>>", False),
    ("detectable_content:number_placeholders", None, "[name] lives at []", True),
    ("detectable_content:number_placeholders", None, "[name] lives at [\n]", False),
    ("detectable_content:postscript", None, "Body.\n\np.s. more", True),
    ("detectable_content:postscript", None, "Body.\n\nPS more", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP. P. S more", True),
    ("length_constraints:number_sentences", None, "Dr. Smith arrived. He left.", True),
    ("length_constraints:number_sentences", None, "Dr. Smith arrived at 5 p.m. today", False),
    ("length_constraints:number_sentences", None, "日本語の文。もう一つ。", False),  # one for Punkt
    ("length_constraints:number_words", None, "don't stop—ever", True),  # don, t, stop, ever
    ("length_constraints:number_words", None, "naïve café 日本語", False),  # three words
    ("length_constraints:number_paragraphs", None, "a\n***\nb\n***\nc", True),
    ("length_constraints:number_paragraphs", None, "***\na\n***\nb\n***\nc\n***", True),
    ("length_constraints:number_paragraphs", None, "a\n***\n\n***\nb\n***\nc", False),
    ("length_constraints:nth_paragraph_first_word", None, 'Intro.\n\n"Then, we go."', True),
    ("length_constraints:nth_paragraph_first_word", None, "Intro.\n\nThereafter we go.", False),
    ("length_constraints:nth_paragraph_first_word", None, "Intro.\n\n\n\nThen we go.", False),
    ("combination:two_responses", None, "A\n******\nB", True),
    ("combination:two_responses", None, "******\nA\n******\nB\n******", True),
    ("combination:two_responses", None, "A\n******\n A ", False),
    ("combination:two_responses", None, "A\n******\n\n******\nB", False),
    ("combination:repeat_prompt", None, "  WRITE a poem.\nRoses are red.", True),
    ("combination:repeat_prompt", None, "Sure! Write a poem.", False),
    ("startend:end_checker", None, 'Bye. "Any other questions?"  ', True),
    ("startend:end_checker", None, "Any other questions? Bye.", False),
    ("startend:quotation", None, ' "hello" ', True),
    ("startend:quotation", None, '"', False),
    ("startend:quotation", None, "«bonjour»", False),
]


def _constraint(instruction_id, kwargs=None):
    return build_constraint(instruction_id, kwargs or VALID_KWARGS[instruction_id], "test")


def test_the_table_covers_every_type():
    assert set(VALID_KWARGS) == {i for i in registered() if not i.startswith("test:")}
    assert len(VALID_KWARGS) == 25
    assert {case[0] for case in CASES} == set(VALID_KWARGS)


@pytest.mark.parametrize("instruction_id,kwargs,response,expected", CASES)
def test_checker_case(instruction_id, kwargs, response, expected):
    assert follow_list([_constraint(instruction_id, kwargs)], response) == [expected]


@pytest.mark.parametrize("instruction_id", sorted(VALID_KWARGS))
@pytest.mark.parametrize("blank", ["", "   ", "\n\n \t"])
def test_blank_response_fails_every_type_in_both_modes(instruction_id, blank):
    constraint = _constraint(instruction_id)
    assert follow_list([constraint], blank) == [False]
    assert follow_list([constraint], blank, loose=True) == [False]


LONG = 200_000  # words


@pytest.mark.parametrize("instruction_id,response,expected", [
    ("length_constraints:number_words", "word " * LONG, True),
    ("keywords:frequency", "ai " * LONG, True),
    ("keywords:existence", "word " * LONG + "tea café", True),
    ("punctuation:no_comma", "word " * LONG, True),
    ("detectable_format:number_bullet_lists", "* item\n" * LONG, False),
    ("detectable_format:json_format", '["' + "x" * LONG + '"]', True),
    ("length_constraints:number_sentences", "One sentence here. " * 20_000, True),
    ("startend:end_checker", "word " * LONG + "Any other questions?", True),
])
def test_very_long_responses(instruction_id, response, expected):
    assert follow_list([_constraint(instruction_id)], response) == [expected]


def test_loose_variants_follow_the_reference_order_without_duplicates():
    response = "Sure:\n*body*\nBye"
    assert loose_variants(response) == [
        "Sure:\n*body*\nBye", "Sure:\nbody\nBye", "*body*\nBye", "Sure:\n*body*", "*body*",
        "body\nBye", "Sure:\nbody", "body"]
    assert loose_variants("one line") == ["one line", ""]


def test_loose_forgives_a_chatty_first_line_and_stars():
    quotation = _constraint("startend:quotation")
    assert follow_list([quotation], 'Here it is:\n"hello"') == [False]
    assert follow_list([quotation], 'Here it is:\n"hello"', loose=True) == [True]
    highlights = _constraint("detectable_format:number_bullet_lists", {"num_bullets": 1})
    assert follow_list([highlights], "**Title**\n* one\n* two") == [False]
    # Without its last line the response has one bullet.
    assert follow_list([highlights], "**Title**\n* one\n* two", loose=True) == [True]
