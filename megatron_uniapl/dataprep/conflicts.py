"""Which constraints cannot be asked together: a table of type pairs and rules on values.

A prompt must be satisfiable: some response passes all of its checkers. Two kinds of
contradiction are refused before a prompt is written:
- `CONFLICTING_TYPES`: pairs of types that no sensible response satisfies whatever their
  arguments, either because the checkers exclude each other (all capitals vs all lowercase) or
  because the requests do (a response that is JSON cannot end with a closing phrase). Each pair
  carries its reason.
- `value_conflict`: pairs that clash only for some arguments (a word limit below what the other
  constraints need, a forbidden word that another constraint forces into the response, a
  section header word in the wrong case for an all-lowercase answer, ...).

Neither is trusted on its own: the sampler also builds a witness response for every prompt and
checks it with the real checkers (`witness`); the tests show that every pair the table allows
and a seeded sample of triples get a passing witness, and that what is refused is refused for
the stated reason.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from megatron_uniapl.dataprep import vocab
from megatron_uniapl.rewards import text

CAPITAL = "change_case:english_capital"
LOWER = "change_case:english_lowercase"
CAPS_FREQ = "change_case:capital_word_frequency"
LANGUAGE = "language:response_language"
CONSTRAINED = "detectable_format:constrained_response"
JSON = "detectable_format:json_format"
REPEAT = "combination:repeat_prompt"
TWO = "combination:two_responses"
QUOTE = "startend:quotation"
END = "startend:end_checker"
PARAGRAPHS = "length_constraints:number_paragraphs"
NTH = "length_constraints:nth_paragraph_first_word"

_TABLE: dict[tuple[str, str], str] = {
    (CAPITAL, LOWER): "every letter capital vs every letter lowercase",
    (CAPITAL, LANGUAGE): "English in capitals vs another language",
    (LOWER, LANGUAGE): "English in lowercase vs another language",
    (CAPITAL, CONSTRAINED): "the answer options are mixed-case sentences",
    (LOWER, CONSTRAINED): "the answer options are mixed-case sentences",
    (LANGUAGE, CONSTRAINED): "the answer options are English sentences",
    (LANGUAGE, END): "the closing phrase is English",
    (LANGUAGE, REPEAT): "the request to repeat is English",
    (LANGUAGE, NTH): "the required first word is English",
    (REPEAT, QUOTE): "must start with the request vs must start with a quotation mark",
    (REPEAT, JSON): "must start with the request vs must be JSON",
    (JSON, QUOTE): "JSON vs a quoted text",
    (JSON, END): "JSON vs ending with a phrase",
    (JSON, TWO): "one JSON document vs two responses",
    (JSON, "detectable_format:title"): "JSON vs a markdown title",
    (JSON, "detectable_format:number_bullet_lists"): "JSON vs markdown bullets",
    (JSON, "detectable_format:multiple_sections"): "JSON vs section headers",
    (JSON, "detectable_format:number_highlighted_sections"): "JSON vs markdown highlights",
    (JSON, PARAGRAPHS): "JSON vs markdown paragraph dividers",
    (JSON, NTH): "JSON vs blank-line paragraphs",
    (JSON, "detectable_content:postscript"): "JSON vs a postscript",
    (TWO, PARAGRAPHS): "the ****** separator splits into an empty *** paragraph",
    (PARAGRAPHS, NTH): "two definitions of a paragraph (*** dividers vs blank lines)",
}

CONFLICTING_TYPES: dict[frozenset[str], str] = {frozenset(pair): why for pair, why in _TABLE.items()}
"""Unordered pairs of constraint types never asked together, with the reason."""


def type_conflict(a: str, b: str) -> str | None:
    """Why types `a` and `b` cannot be combined, or None. A type never pairs with itself (a
    prompt asks each type at most once)."""
    if a == b:
        return "a type appears at most once per prompt"
    return CONFLICTING_TYPES.get(frozenset((a, b)))


def forced_text(instruction_id: str, kwargs: Mapping[str, Any]) -> str:
    """Text that any response satisfying this constraint must contain (as the witness writes it).

    The clashes between one constraint's required text and another's limits (a forbidden word,
    a comma, a rare letter, a keyword or capital-word count) are all read from this."""
    if instruction_id == "keywords:existence":
        return " ".join(kwargs["keywords"])
    if instruction_id == "keywords:frequency" and kwargs["relation"] == "at least":
        return " ".join([kwargs["keyword"]] * kwargs["frequency"])
    return {
        REPEAT: lambda: kwargs["prompt_to_repeat"],
        END: lambda: kwargs["end_phrase"],
        NTH: lambda: kwargs["first_word"],
        CONSTRAINED: lambda: vocab.CONSTRAINED_ANSWER,
        "detectable_format:multiple_sections": lambda: " ".join(
            f"{kwargs['section_spliter']} {k + 1}" for k in range(kwargs["num_sections"])),
        "detectable_content:postscript": lambda: kwargs["postscript_marker"],
    }.get(instruction_id, lambda: "")()


def _min_words(iid: str, kw: Mapping[str, Any]) -> int:
    """A generous bound on the words this constraint adds to the shortest witness."""
    fixed = {REPEAT: lambda: text.count_words(kw["prompt_to_repeat"]),
             END: lambda: text.count_words(kw["end_phrase"]),
             "keywords:existence": lambda: len(kw["keywords"]),
             "detectable_format:number_bullet_lists": lambda: 3 * kw["num_bullets"],
             "detectable_format:number_highlighted_sections": lambda: 3 * kw["num_highlights"],
             "detectable_content:number_placeholders": lambda: 2 * kw["num_placeholders"],
             "detectable_format:multiple_sections": lambda: 3 * kw["num_sections"],
             PARAGRAPHS: lambda: 4 * kw["num_paragraphs"],
             NTH: lambda: 4 * kw["num_paragraphs"],
             "detectable_format:title": lambda: 4, "detectable_content:postscript": lambda: 6,
             CONSTRAINED: lambda: 4, TWO: lambda: 6, JSON: lambda: 1}
    if iid in fixed:
        return fixed[iid]()
    at_least = {"keywords:frequency": ("relation", "frequency"),
                "keywords:letter_frequency": ("let_relation", "let_frequency"),
                CAPS_FREQ: ("capital_relation", "capital_frequency"),
                "length_constraints:number_sentences": ("relation", "num_sentences")}
    if iid in at_least and kw[at_least[iid][0]] == "at least":
        count = kw[at_least[iid][1]]
        return 4 * count if iid == "length_constraints:number_sentences" else count
    return 0


_BASE_WORDS = 24
"""Words of the witness's own content line (and enough text for the language detector)."""


def _min_sentences(iid: str, kw: Mapping[str, Any]) -> int:
    """Sentences this constraint forces into any witness (beyond the content line)."""
    if iid == REPEAT:
        return text.count_sentences(kw["prompt_to_repeat"])
    return {END: 1, CONSTRAINED: 1, "detectable_content:postscript": 1, TWO: 1}.get(iid, 0)


VALUE_RULES = ("case", "script", "repeat", "forced_text", "word_budget", "sentence_budget")
"""The kinds of value conflicts `value_conflict` reports."""


def value_conflict(pairs: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[str, str] | None:
    """`(rule, why)` when these (instruction_id, kwargs) cannot all hold for their values, or
    None. `rule` is one of VALUE_RULES."""
    by = dict(pairs)
    return _case_and_script(by) or _forced(pairs, by) or _budgets(pairs, by)


def _case_and_script(by: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    lang = by.get(LANGUAGE, {}).get("language")
    caps = by.get(CAPS_FREQ)
    if caps and caps["capital_relation"] == "at least" and LOWER in by:
        return "case", "capital words required in an all-lowercase answer"
    if caps and caps["capital_relation"] == "less than" and CAPITAL in by:
        return "case", "an all-capitals answer limited to few capital words"
    if caps and caps["capital_relation"] == "at least" and lang and lang not in vocab.CASED_LANGUAGES:
        return "script", f"capital words required in {lang}, a script without capitals"
    letter = by.get("keywords:letter_frequency")
    if letter and lang and (letter["let_relation"] == "less than" or lang not in vocab.LATIN_SCRIPT_LANGUAGES):
        return "script", f"letter count of {letter['letter']!r} in a {lang} answer"
    sections = by.get("detectable_format:multiple_sections")
    if sections:
        word = sections["section_spliter"]
        if (LOWER in by and word != word.lower()) or (CAPITAL in by and word != word.upper()):
            return "case", f"section header {word!r} in the wrong case"
    nth = by.get(NTH)
    if nth and REPEAT in by and nth["nth_paragraph"] == 1:
        return "repeat", "the first paragraph must start with the repeated request"
    return None


def _forced(pairs: Sequence[tuple[str, Mapping[str, Any]]], by: Mapping[str, Mapping[str, Any]]
            ) -> tuple[str, str] | None:
    """Limits of one constraint broken by the text another one forces into the answer."""
    texts = {iid: forced_text(iid, kw) for iid, kw in pairs}

    def others(iid: str) -> str:
        return " ".join(t for other, t in texts.items() if other != iid and t)

    forbidden = by.get("keywords:forbidden_words")
    for word in forbidden["forbidden_words"] if forbidden else ():
        if re.search(r"\b" + word + r"\b", others("keywords:forbidden_words"), flags=re.IGNORECASE):
            return "forced_text", f"forbidden word {word!r} is required by another constraint"
    if "punctuation:no_comma" in by and "," in others("punctuation:no_comma"):
        return "forced_text", "another constraint requires a comma"
    letter = by.get("keywords:letter_frequency")
    if letter and letter["let_relation"] == "less than":
        count = others("keywords:letter_frequency").lower().count(letter["letter"])
        if count >= letter["let_frequency"]:
            return "forced_text", f"letter {letter['letter']!r} is required {count} times"
    frequency = by.get("keywords:frequency")
    if frequency and frequency["relation"] == "less than":
        count = len(re.findall(frequency["keyword"], others("keywords:frequency"), flags=re.IGNORECASE))
        if count >= frequency["frequency"]:
            return "forced_text", f"keyword {frequency['keyword']!r} is required {count} times"
    caps = by.get(CAPS_FREQ)
    if caps and caps["capital_relation"] == "less than":
        count = sum(1 for t in text.word_tokens(others(CAPS_FREQ)) if t.isupper())
        if count >= caps["capital_frequency"]:
            return "forced_text", f"{count} all-capital words are required"
    return None


def _budgets(pairs: Sequence[tuple[str, Mapping[str, Any]]], by: Mapping[str, Mapping[str, Any]]
             ) -> tuple[str, str] | None:
    """Upper bounds on words or sentences below what the other constraints need."""
    words = by.get("length_constraints:number_words")
    if words and words["relation"] == "less than":
        need = _BASE_WORDS + sum(_min_words(iid, kw) for iid, kw in pairs)
        if need >= words["num_words"]:
            return "word_budget", f"the other constraints need about {need} words"
    sentences = by.get("length_constraints:number_sentences")
    if sentences and sentences["relation"] == "less than":
        need = 1 + sum(_min_sentences(iid, kw) for iid, kw in pairs)
        if need >= sentences["num_sentences"]:
            return "sentence_budget", f"the other constraints need about {need} sentences"
    return None


def table_size() -> int:
    """Number of conflicting type pairs in the table."""
    return len(CONFLICTING_TYPES)

