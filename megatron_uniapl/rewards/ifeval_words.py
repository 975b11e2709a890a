"""IFEval constraints on words, letters, case, punctuation and language (9 types).

Semantics follow Google's IFEval reference checkers exactly, quirks included, because rewards
and evaluation must agree with published IFEval numbers:
- keywords are regular expressions matched case-insensitively anywhere (so `keywords:existence`
  with "art" is satisfied by "start"); `forbidden_words` adds word boundaries;
- letters are counted case-insensitively; capitalized words are counted over NLTK word tokens;
- one deliberate difference: `keywords:letter_frequency` counts any single character it is
  given. The reference replaces a non-letter (IFEval has '#' and '!' prompts) by a *random*
  letter, which makes its verdict on those two prompts a coin toss; counting the character
  the prompt names is what the prompt asks for;
- a response in which the language detector finds no features passes the language and case
  checks (the reference treats a detector error as success).
"""

from __future__ import annotations

import re

from megatron_uniapl.rewards import text
from megatron_uniapl.rewards.registry import (
    Kwarg,
    compare,
    non_empty,
    non_negative,
    register,
    relation_ok,
)


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as e:
        return f"is matched as a regular expression by IFEval and does not compile: {e}"
    return None


def _keywords_problem(words: list[str]) -> str | None:
    if not words:
        return "must list at least one keyword"
    for word in words:
        problem = non_empty(word) or _regex_problem(word)
        if problem:
            return f"keyword {word!r} {problem}"
    return None


def _letter_problem(letter: str) -> str | None:
    if len(letter) != 1 or letter.isspace():
        return "must be a single non-space character"
    return None


def _language_problem(code: str) -> str | None:
    if code not in text.known_languages():
        codes = ", ".join(sorted(text.known_languages()))
        return f"is not a code the language detector returns ({codes})"
    return None


RELATION_DOC = "'less than' (count < threshold) or 'at least' (count >= threshold)"


@register("keywords:existence",
          Kwarg("keywords", list, "keywords (regexes) that must all occur", _keywords_problem))
def keywords_existence(response: str, *, keywords: list[str]) -> bool:
    """Every keyword occurs, case-insensitively, anywhere (also inside longer words)."""
    return all(re.search(keyword, response, flags=re.IGNORECASE) for keyword in keywords)


@register("keywords:frequency",
          Kwarg("keyword", str, "the keyword (a regex) to count",
                lambda v: non_empty(v) or _regex_problem(v.strip()), str.strip),
          Kwarg("frequency", int, "the threshold count", non_negative),
          Kwarg("relation", str, RELATION_DOC, relation_ok))
def keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    """The keyword's case-insensitive occurrence count compares to `frequency` by `relation`."""
    count = len(re.findall(keyword, response, flags=re.IGNORECASE))
    return compare(count, relation, frequency)


@register("keywords:forbidden_words",
          Kwarg("forbidden_words", list, "words that must not occur", _keywords_problem))
def forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    """No forbidden word occurs as a whole word, case-insensitively."""
    return not any(re.search(r"\b" + word + r"\b", response, flags=re.IGNORECASE)
                   for word in forbidden_words)


@register("keywords:letter_frequency",
          Kwarg("letter", str, "a single character, counted case-insensitively", _letter_problem,
                str.lower),
          Kwarg("let_frequency", int, "the threshold count", non_negative),
          Kwarg("let_relation", str, RELATION_DOC, relation_ok))
def letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    """The letter's case-insensitive count compares to `let_frequency` by `let_relation`."""
    return compare(response.lower().count(letter), let_relation, let_frequency)


@register("language:response_language",
          Kwarg("language", str, "language code as langdetect returns it, e.g. 'de'",
                _language_problem))
def response_language(response: str, *, language: str) -> bool:
    """The detected language is `language` (or nothing could be detected)."""
    detected = text.detect_language(response)
    return detected is None or detected == language


@register("change_case:capital_word_frequency",
          Kwarg("capital_frequency", int, "the threshold count", non_negative),
          Kwarg("capital_relation", str, RELATION_DOC, relation_ok))
def capital_word_frequency(response: str, *, capital_frequency: int,
                           capital_relation: str) -> bool:
    """The number of all-capital word tokens compares to `capital_frequency` by the relation."""
    count = sum(1 for token in text.word_tokens(response) if token.isupper())
    return compare(count, capital_relation, capital_frequency)


@register("change_case:english_capital")
def english_capital(response: str) -> bool:
    """All cased characters are upper case, and the text is detected as English (or as nothing)."""
    if not response.isupper():
        return False
    return text.detect_language(response) in (None, "en")


@register("change_case:english_lowercase")
def english_lowercase(response: str) -> bool:
    """All cased characters are lower case, and the text is detected as English (or as nothing)."""
    if not response.islower():
        return False
    return text.detect_language(response) in (None, "en")


@register("punctuation:no_comma")
def no_comma(response: str) -> bool:
    """No ASCII comma anywhere (other comma characters, e.g. '，', are allowed)."""
    return "," not in response
