"""IFEval constraints on length, paragraphs, start and end, and combinations (8 types).

Two paragraph notions coexist in IFEval and are kept apart here: `number_paragraphs` splits on
the markdown divider `***`, `nth_paragraph_first_word` on blank lines (`\\n\\n`). Sentences are
English Punkt sentences and words are `\\w+` runs (see `text`).
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

RELATION_DOC = "'less than' (count < threshold) or 'at least' (count >= threshold)"
TWO_RESPONSES_SEPARATOR = "******"
_DIVIDER = re.compile(r"\s?\*\*\*\s?")
# Punctuation that ends the first word of a paragraph in `nth_paragraph_first_word`.
_WORD_END = frozenset(".,?!'\"")


@register("length_constraints:number_sentences",
          Kwarg("num_sentences", int, "the threshold count", non_negative),
          Kwarg("relation", str, RELATION_DOC, relation_ok))
def number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    """The number of English Punkt sentences compares to `num_sentences` by `relation`."""
    return compare(text.count_sentences(response), relation, num_sentences)


@register("length_constraints:number_words",
          Kwarg("num_words", int, "the threshold count", non_negative),
          Kwarg("relation", str, RELATION_DOC, relation_ok))
def number_words(response: str, *, num_words: int, relation: str) -> bool:
    """The number of `\\w+` words compares to `num_words` by `relation`."""
    return compare(text.count_words(response), relation, num_words)


@register("length_constraints:number_paragraphs",
          Kwarg("num_paragraphs", int, "exact number of paragraphs", non_negative))
def number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Exactly `num_paragraphs` parts between `***` dividers; blank parts are allowed only at
    the two ends, and an inner blank part fails the check."""
    parts = _DIVIDER.split(response)
    count = len(parts)
    for index, part in enumerate(parts):
        if not part.strip():
            if index in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def _nth_problem(kwargs_value: int) -> str | None:
    return "must be >= 1" if kwargs_value < 1 else None


def _nth_within(kwargs: dict) -> tuple[str, str] | None:
    if kwargs["nth_paragraph"] > kwargs["num_paragraphs"]:
        return ("nth_paragraph", f"is {kwargs['nth_paragraph']}, beyond num_paragraphs "
                                 f"({kwargs['num_paragraphs']})")
    return None


@register("length_constraints:nth_paragraph_first_word",
          Kwarg("num_paragraphs", int, "exact number of blank-line separated paragraphs",
                non_negative),
          Kwarg("nth_paragraph", int, "1-based index of the paragraph to check", _nth_problem),
          Kwarg("first_word", str, "the word it must start with (case-insensitive)", non_empty,
                str.lower),
          cross_check=_nth_within)
def nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int,
                             first_word: str) -> bool:
    """Exactly `num_paragraphs` non-blank `\\n\\n` paragraphs, and paragraph `nth_paragraph`
    (counted over all parts, blank ones included) starts with `first_word`."""
    parts = response.split("\n\n")
    count = sum(1 for part in parts if part.strip())
    if nth_paragraph > count:
        return False
    paragraph = parts[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    found = []
    for char in word:
        if char in _WORD_END:
            break
        found.append(char.lower())
    return count == num_paragraphs and "".join(found) == first_word


@register("combination:two_responses")
def two_responses(response: str) -> bool:
    """Exactly two different non-blank responses separated by `******` (blank ends allowed)."""
    parts = response.split(TWO_RESPONSES_SEPARATOR)
    answers = []
    for index, part in enumerate(parts):
        if part.strip():
            answers.append(part)
        elif index not in (0, len(parts) - 1):
            return False
    return len(answers) == 2 and answers[0].strip() != answers[1].strip()


@register("combination:repeat_prompt",
          Kwarg("prompt_to_repeat", str, "the request the response must start with", non_empty))
def repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """The response starts with the request, ignoring case and surrounding whitespace."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


@register("startend:end_checker",
          Kwarg("end_phrase", str, "the phrase the response must end with", non_empty, str.strip))
def end_checker(response: str, *, end_phrase: str) -> bool:
    """The response ends with `end_phrase`, ignoring case, outer whitespace and double quotes."""
    return response.strip().strip('"').lower().endswith(end_phrase.lower())


@register("startend:quotation")
def quotation(response: str) -> bool:
    """The stripped response is at least two characters and starts and ends with `"`."""
    stripped = response.strip()
    return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'
