"""A witness: one response, built from the constraints alone, that passes all of a prompt's checkers.

A witness proves a prompt satisfiable, and the prompt builder writes no prompt without one. It
is assembled as a small document whose parts each answer one constraint:

    [the repeated request]
    [<<title>>]
    content line: filler sentences, then keywords, counted words, letters, capital words,
                  *highlights* and [placeholders]
    [Section k] lines, * bullet lines, "My answer is yes.", [P.S. line]   (in the paragraphs)
    paragraphs joined by "\\n***\\n" (number_paragraphs) or blank lines (nth_paragraph_first_word)
    [\\n******\\n second response] [\\n closing phrase]
    then lower/upper case, then "quotes" around everything; JSON answers put the content line
    in {"answer": ...} instead.

Counts with a lower bound (words, sentences, letters, and enough text for the language
detector) are met by measuring the draft with the checkers' own counters and adding what is
missing. Upper bounds are met by keeping the draft small: when a draft of full sentences breaks
one, a draft of short sentences (many sentences in few words) and then one of phrases without
full stops (few sentences: the sentence splitter joins them) are tried. The result is accepted
only if every checker passes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from megatron_uniapl.dataprep import vocab
from megatron_uniapl.dataprep.conflicts import (CAPITAL, CAPS_FREQ, CONSTRAINED, END, JSON,
                                                LANGUAGE, LOWER, NTH, PARAGRAPHS, QUOTE, REPEAT,
                                                TWO)
from megatron_uniapl.rewards import text
from megatron_uniapl.rewards.corpus import LANGUAGE_SAMPLES
from megatron_uniapl.rewards.registry import build_constraints
from megatron_uniapl.rewards.verify import follow_list

Pairs = Sequence[tuple[str, Mapping[str, Any]]]

BASE_SENTENCES = 2
"""Filler sentences of the content line: enough for the language detector to read the case
checks' "English" through keywords and repeated letter words."""
TERSE_WORDS = 5
"""Words of a filler phrase in a terse draft."""
SHORT_WORDS = 4
"""Words of a sentence in a short draft."""
STYLES = ("full", "short", "terse")
"""Drafts tried in order (see `_Source`)."""
MAX_FILL_ROUNDS = 8
"""Measure-and-add rounds for lower bounds before a draft is given up."""


@dataclass
class _Fill:
    """What a draft adds to meet lower bounds."""

    sentences: int = 0
    """Extra filler sentences on the content line."""
    letters: int = 0
    """Letter words (vocab.LETTER_WORDS) on the content line."""


class _Source:
    """Filler text in order: English sentences, or the response language's sample sentence.

    Styles: "full" sentences; "short" ones (their first SHORT_WORDS words and a full stop) for
    many sentences under a word limit; "terse" phrases without a full stop, which the sentence
    splitter joins with what follows, for few sentences."""

    def __init__(self, language: str | None, style: str, no_comma: bool):
        self.language, self.style = language, style
        if language:
            # One sample sentence per language, ended by a full stop whatever the script uses:
            # the sentence splitter counts only Latin sentence ends.
            sample = LANGUAGE_SAMPLES[language].rstrip("。।.") + "."
            self.sentences = [sample.replace(",", "") if no_comma else sample]
        else:
            self.sentences = list(vocab.FILLER)
        self.position = 0

    @property
    def terse(self) -> bool:
        return self.style == "terse"

    def sentence(self) -> str:
        s = self.sentences[self.position % len(self.sentences)]
        self.position += 1
        words = s.rstrip(".").split()
        if self.style == "full" or len(words) < 2:  # (a script without spaces stays whole)
            return s.rstrip(".") if self.terse else s
        if self.style == "short":
            return " ".join(words[:SHORT_WORDS]) + "."
        return " ".join(words[:TERSE_WORDS])

    def words(self, n: int) -> str:
        s = self.sentences[self.position % len(self.sentences)].rstrip(".")
        self.position += 1
        parts = s.split()
        if len(parts) < 2:  # a script without spaces: take characters instead
            return s[: 3 * n]
        return " ".join(parts[:n])


def _decapitalize(s: str) -> str:
    return s[:1].lower() + s[1:]


def _content_line(by: Mapping[str, Mapping], src: _Source, fill: _Fill) -> str:
    """The first line of the answer: filler, then every inline item (see the module docstring)."""
    base = BASE_SENTENCES if src.style == "full" else 1
    parts = [src.sentence() for _ in range(base + fill.sentences)]
    tail: list[str] = []
    if "keywords:existence" in by:
        tail += by["keywords:existence"]["keywords"]
    frequency = by.get("keywords:frequency")
    if frequency and frequency["relation"] == "at least":
        tail += [frequency["keyword"]] * frequency["frequency"]
    letter = by.get("keywords:letter_frequency")
    if letter and letter["let_relation"] == "at least":
        words = vocab.LETTER_WORDS[letter["letter"].lower()]
        tail += [words[i % len(words)] for i in range(fill.letters)]
    caps = by.get(CAPS_FREQ)
    if caps and caps["capital_relation"] == "at least":
        words = vocab.CAPITAL_WORDS
        tail += [words[i % len(words)] for i in range(caps["capital_frequency"])]
    highlights = by.get("detectable_format:number_highlighted_sections")
    if highlights:
        tail += [f"*{src.words(2)}*" for _ in range(highlights["num_highlights"])]
    placeholders = by.get("detectable_content:number_placeholders")
    if placeholders:
        tail += [f"[{src.words(1)}]" for _ in range(placeholders["num_placeholders"])]
    line = " ".join(parts)
    if not tail:
        return line
    end = line[-1] if line[-1] == "." else ""
    return f"{line[: len(line) - len(end)]} {' '.join(tail)}{end}"


def _document(by: Mapping[str, Mapping], src: _Source, fill: _Fill) -> str:
    """Everything but case and quotation: paragraphs, headers, bullets, closing parts."""
    count = by.get(PARAGRAPHS, by.get(NTH, {})).get("num_paragraphs", 1)
    paragraphs = [[_content_line(by, src, fill)]] + [[src.sentence()] for _ in range(count - 1)]
    nth = by.get(NTH)
    if nth:
        index = nth["nth_paragraph"] - 1
        paragraphs[index][0] = f"{nth['first_word'].capitalize()} {_decapitalize(paragraphs[index][0])}"
    if "detectable_format:title" in by:
        at = 1 if nth and nth["nth_paragraph"] == 1 else 0
        paragraphs[0].insert(at, f"<<{src.words(3)}>>")
    if REPEAT in by:
        paragraphs[0].insert(0, by[REPEAT]["prompt_to_repeat"].strip())
    sections = by.get("detectable_format:multiple_sections")
    if sections:
        for k in range(sections["num_sections"]):
            paragraphs[k % count].append(f"{sections['section_spliter']} {k + 1}")
            if src.style == "full":
                paragraphs[k % count].append(src.sentence())
    last = paragraphs[-1]
    if "detectable_format:number_bullet_lists" in by:
        last += [f"* {src.words(2)}" for _ in range(by["detectable_format:number_bullet_lists"]["num_bullets"])]
    if CONSTRAINED in by:
        last.append(vocab.CONSTRAINED_ANSWER)
    if "detectable_content:postscript" in by:
        last.append(f"{by['detectable_content:postscript']['postscript_marker']} {src.sentence()}")
    separator = "\n***\n" if PARAGRAPHS in by else "\n\n"
    body = separator.join("\n".join(lines) for lines in paragraphs)
    if TWO in by:
        # The second answer differs from the first: a further sentence, or for a one-sentence
        # language a fragment of it.
        body += "\n******\n" + (src.words(3) if src.language else src.sentence())
    if END in by:
        body += "\n" + by[END]["end_phrase"]
    return body


def render(pairs: Pairs, style: str = "full", fill: _Fill | None = None) -> str:
    """One draft of the witness (not yet checked)."""
    by = {iid: kw for iid, kw in pairs}
    src = _Source(by.get(LANGUAGE, {}).get("language"), style, "punctuation:no_comma" in by)
    fill = fill or _Fill()
    if JSON in by:
        inner = _content_line(by, src, fill)
        if CONSTRAINED in by:
            inner += " " + vocab.CONSTRAINED_ANSWER
        body = json.dumps({"answer": inner}, ensure_ascii=False)
    else:
        body = _document(by, src, fill)
    if LOWER in by:
        body = body.lower()
    elif CAPITAL in by:
        body = body.upper()
    return f'"{body}"' if QUOTE in by else body


def _deficits(by: Mapping[str, Mapping], draft: str, fill: _Fill) -> bool:
    """Grow `fill` by what the draft lacks for its lower bounds; True when it lacked anything."""
    grew = False
    sentences = by.get("length_constraints:number_sentences")
    if sentences and sentences["relation"] == "at least":
        missing = sentences["num_sentences"] - text.count_sentences(draft)
        if missing > 0:
            fill.sentences += missing
            grew = True
    words = by.get("length_constraints:number_words")
    if words and words["relation"] == "at least":
        missing = words["num_words"] - text.count_words(draft)
        if missing > 0:
            fill.sentences += math.ceil(missing / 6)
            grew = True
    letter = by.get("keywords:letter_frequency")
    if letter and letter["let_relation"] == "at least":
        char = letter["letter"].lower()
        missing = letter["let_frequency"] - draft.lower().count(char)
        if missing > 0:
            fill.letters += math.ceil(missing / min(w.count(char) for w in vocab.LETTER_WORDS[char]))
            grew = True
    # The case checks need English and response_language its language: more filler text
    # outweighs keywords and letter words that confuse the detector.
    wanted = by.get(LANGUAGE, {}).get("language") or ("en" if LOWER in by or CAPITAL in by else None)
    if wanted and text.detect_language(draft) not in (None, wanted):
        fill.sentences += 2
        grew = True
    return grew


def build(pairs: Pairs) -> str | None:
    """A response that passes every checker of `pairs` ((instruction_id, kwargs) as a prompt
    record holds them), or None when no draft style does."""
    constraints = build_constraints([iid for iid, _ in pairs], [dict(kw) for _, kw in pairs], "witness")
    by = {iid: kw for iid, kw in pairs}
    for style in STYLES:
        fill = _Fill()
        for _ in range(MAX_FILL_ROUNDS):
            draft = render(pairs, style, fill)
            if not _deficits(by, draft, fill):
                break
        if all(follow_list(constraints, draft)):
            return draft
    return None
