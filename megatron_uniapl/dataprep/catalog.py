"""Per constraint type: how its kwargs are drawn and how it is said in the prompt.

Every one of the registry's 25 IFEval types has a `Spec`: a sampler `(rng, instruction) ->
kwargs` whose values the registry accepts and the witness builder can meet, and a few phrasings
that say exactly what the checker tests (the checker is the ground truth: "at least 3
highlighted sections" is rendered only because `number_highlighted_sections` counts `>= 3`). The
first phrasing of each type follows the wording of IFEval's prompts, so that training prompts
ask the way the evaluation asks; the others vary the wording so that a policy learns the
constraint, not one sentence.

Ranges are this project's choices, close to what IFEval's 541 prompts use, with two deliberate
limits that keep every draw satisfiable next to other constraints: "less than N" letter counts
are drawn only for the rare letters j, q, x, z (a response cannot avoid "e") and "at least N"
counts of those letters stay at 10 or below, and
`combination:repeat_prompt` is drawn only for instructions of one line and at most
`REPEAT_MAX_WORDS` words (the response must start with the whole request).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from megatron_uniapl.dataprep import vocab
from megatron_uniapl.rewards import text

RELATIONS = ("less than", "at least")
REPEAT_MAX_WORDS = 40
"""Longest instruction (in words) a prompt may ask to repeat verbatim."""


@dataclass(frozen=True)
class Spec:
    """How one constraint type is drawn and rendered."""

    instruction_id: str
    """The registry id."""
    sample: Callable[[random.Random, str], dict[str, Any]]
    """`(rng, instruction) -> kwargs`, valid for the registry's schema."""
    phrasings: tuple[str, ...]
    """`str.format` templates over `fields(kwargs)`; the first follows IFEval's wording."""
    fields: Callable[[dict[str, Any]], dict[str, Any]] = dict
    """The template fields of a kwargs dict (lists quoted, language codes named)."""
    eligible: Callable[[str], bool] = lambda instruction: True
    """Whether the type may be drawn for this instruction at all."""

    def render(self, kwargs: dict[str, Any], rng: random.Random) -> str:
        """One sentence (or two) asking for the constraint, in a randomly chosen phrasing."""
        return rng.choice(self.phrasings).format(**self.fields(kwargs))


def quoted_list(words: list[str]) -> str:
    """'"a"', '"a" and "b"', '"a", "b" and "c"'."""
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def repeat_eligible(instruction: str) -> bool:
    """One line, at most REPEAT_MAX_WORDS words, and no markdown that would itself count as
    a bullet, a highlight or a paragraph divider once repeated."""
    stripped = instruction.strip()
    return ("\n" not in stripped and "*" not in stripped and not stripped.startswith("-")
            and 0 < text.count_words(stripped) <= REPEAT_MAX_WORDS)


def _relation_count(key: str, relation_key: str, at_least: tuple[int, ...],
                    less_than: tuple[int, ...]) -> Callable[[random.Random, str], dict]:
    def sample(rng: random.Random, instruction: str) -> dict:
        relation = rng.choice(RELATIONS)
        pool = at_least if relation == "at least" else less_than
        return {relation_key: relation, key: rng.choice(pool)}

    return sample


def _letter(rng: random.Random, instruction: str) -> dict:
    relation = rng.choice(RELATIONS)
    if relation == "less than":
        return {"letter": rng.choice(vocab.RARE_LETTERS), "let_relation": relation,
                "let_frequency": rng.randint(2, 6)}
    letter = rng.choice(string.ascii_lowercase)
    # Rare letters only come in words like "quiet": many of them stop reading as English.
    counts = (1, 2, 3, 4, 5, 6, 8, 10) if letter in vocab.RARE_LETTERS else (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30)
    return {"letter": letter, "let_relation": relation, "let_frequency": rng.choice(counts)}


def _nth_paragraph(rng: random.Random, instruction: str) -> dict:
    num = rng.randint(2, 6)
    return {"num_paragraphs": num, "nth_paragraph": rng.randint(1, num),
            "first_word": rng.choice(vocab.FIRST_WORDS)}


def _no_kwargs(rng: random.Random, instruction: str) -> dict:
    return {}


SPECS: dict[str, Spec] = {s.instruction_id: s for s in (
    Spec("keywords:existence",
         lambda rng, ins: {"keywords": rng.sample(vocab.KEYWORDS, rng.randint(1, 3))},
         ("Include keywords {words} in the response.",
          "Make sure the words {words} appear in your answer."),
         lambda kw: {"words": quoted_list(kw["keywords"])}),
    Spec("keywords:frequency",
         lambda rng, ins: {"keyword": rng.choice(vocab.KEYWORDS),
                           **_relation_count("frequency", "relation", (1, 2, 3, 4, 5),
                                             (2, 3, 4, 5))(rng, ins)},
         ('In your response, the word "{keyword}" should appear {relation} {frequency} times.',
          'Use the word "{keyword}" {relation} {frequency} times.')),
    Spec("keywords:forbidden_words",
         lambda rng, ins: {"forbidden_words": rng.sample(vocab.KEYWORDS, rng.randint(1, 3))},
         ("Do not include keywords {words} in the response.",
          "Avoid the words {words} entirely."),
         lambda kw: {"words": quoted_list(kw["forbidden_words"])}),
    Spec("keywords:letter_frequency", _letter,
         ('In your response, the letter "{letter}" should appear {let_relation} {let_frequency} '
          'times.',
          'Use the letter "{letter}" {let_relation} {let_frequency} times in your answer.')),
    Spec("language:response_language",
         lambda rng, ins: {"language": rng.choice(sorted(vocab.LANGUAGE_NAMES))},
         ("Your ENTIRE response should be in {name} language, no other language is allowed.",
          "Write your whole answer in {name} and in no other language."),
         lambda kw: {"name": vocab.LANGUAGE_NAMES[kw["language"]]}),
    Spec("change_case:capital_word_frequency",
         _relation_count("capital_frequency", "capital_relation", (1, 2, 3, 4, 5, 8, 10),
                         (2, 3, 4, 5, 8, 10)),
         ("In your response, words with all capital letters should appear {capital_relation} "
          "{capital_frequency} times.",
          "Write {capital_relation} {capital_frequency} words entirely in capital letters.")),
    Spec("change_case:english_capital", _no_kwargs,
         ("Your entire response should be in English, and in all capital letters.",
          "Answer in English using capital letters only.")),
    Spec("change_case:english_lowercase", _no_kwargs,
         ("Your entire response should be in English, and in all lowercase letters. No capital "
          "letters are allowed.",
          "Answer in English using lowercase letters only; no capital letters at all.")),
    Spec("punctuation:no_comma", _no_kwargs,
         ("In your entire response, refrain from the use of any commas.",
          "Do not use any commas in your answer.")),
    Spec("detectable_format:number_bullet_lists",
         lambda rng, ins: {"num_bullets": rng.randint(1, 8)},
         ("Your answer must contain exactly {num_bullets} bullet points. Use the markdown bullet "
          "points such as:\n* This is point 1.",
          "Give exactly {num_bullets} markdown bullet points, each on its own line starting "
          'with "* ".')),
    Spec("detectable_format:constrained_response", _no_kwargs,
         ('Answer with one of the following options: "My answer is yes.", "My answer is no.", '
          '"My answer is maybe."',
          'Include one of these sentences in your answer, exactly as written: "My answer is '
          'yes.", "My answer is no." or "My answer is maybe."')),
    Spec("detectable_format:number_highlighted_sections",
         lambda rng, ins: {"num_highlights": rng.randint(1, 6)},
         ("Highlight at least {num_highlights} sections in your answer with markdown, i.e. "
          "*highlighted section*.",
          "Mark at least {num_highlights} parts of your answer in markdown italics, like "
          "*this part*.")),
    Spec("detectable_format:multiple_sections",
         lambda rng, ins: {"section_spliter": rng.choice(vocab.SECTION_SPLITTERS),
                           "num_sections": rng.randint(2, 5)},
         ("Your response must have {num_sections} sections. Mark the beginning of each section "
          "with {section_spliter} X, such as: {section_spliter} 1.",
          "Split your answer into {num_sections} sections, each starting with a header line "
          '"{section_spliter} 1", "{section_spliter} 2" and so on.')),
    Spec("detectable_format:json_format", _no_kwargs,
         ("Entire output should be wrapped in JSON format. You can use markdown ticks such as "
          "```.",
          "Format your entire answer as valid JSON.")),
    Spec("detectable_format:title", _no_kwargs,
         ("Your answer must contain a title, wrapped in double angular brackets, such as "
          "<<poem of joy>>.",
          "Give your answer a title in double angular brackets, like <<a good title>>.")),
    Spec("detectable_content:number_placeholders",
         lambda rng, ins: {"num_placeholders": rng.randint(1, 6)},
         ("The response must contain at least {num_placeholders} placeholders represented by "
          "square brackets, such as [address].",
          "Leave at least {num_placeholders} placeholders in square brackets, like [name], for "
          "the reader to fill in.")),
    Spec("detectable_content:postscript",
         lambda rng, ins: {"postscript_marker": rng.choice(vocab.POSTSCRIPT_MARKERS)},
         ("At the end of your response, please explicitly add a postscript starting with "
          '"{postscript_marker}".',
          'Add a postscript that starts with "{postscript_marker}".')),
    Spec("length_constraints:number_sentences",
         _relation_count("num_sentences", "relation", (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25),
                         (3, 4, 5, 6, 8, 10, 12, 15)),
         ("Your response should contain {relation} {num_sentences} sentences.",
          "Write {relation} {num_sentences} sentences.")),
    Spec("length_constraints:number_words",
         _relation_count("num_words", "relation", (50, 100, 150, 200, 300, 400),
                         (40, 60, 80, 100, 150, 200, 300)),
         ("Answer with {relation} {num_words} words.",
          "Your answer should be {relation} {num_words} words long.")),
    Spec("length_constraints:number_paragraphs",
         lambda rng, ins: {"num_paragraphs": rng.randint(2, 6)},
         ("There should be {num_paragraphs} paragraphs. Paragraphs are separated with the "
          'markdown divider "***".',
          "Write exactly {num_paragraphs} paragraphs and put the markdown divider *** between "
          "them.")),
    Spec("length_constraints:nth_paragraph_first_word", _nth_paragraph,
         ("There should be {num_paragraphs} paragraphs. Paragraphs and only paragraphs are "
          "separated with each other by two new lines. Paragraph {nth_paragraph} must start "
          'with word "{first_word}".',
          "Write exactly {num_paragraphs} paragraphs separated by blank lines; paragraph "
          '{nth_paragraph} must begin with the word "{first_word}".')),
    Spec("combination:two_responses", _no_kwargs,
         ("Give two different responses. Responses and only responses should be separated by "
          "6 asterisk symbols: ******.",
          "Write two different answers separated by a line of six asterisks (******) and "
          "nothing else between them.")),
    Spec("combination:repeat_prompt",
         lambda rng, ins: {"prompt_to_repeat": ins.strip()},
         ("First repeat the request above word for word without change, then give your answer "
          "(do not say any words or characters before repeating the request; the request does "
          "not include this sentence or the ones after it).",
          "Begin your response by repeating the request above exactly as written (without these "
          "instructions), with nothing before it, and then answer it."),
         lambda kw: {},
         repeat_eligible),
    Spec("startend:end_checker",
         lambda rng, ins: {"end_phrase": rng.choice(vocab.END_PHRASES)},
         ('Finish your response with this exact phrase "{end_phrase}". No other words should '
          "follow this phrase.",
          'End your answer with the exact phrase "{end_phrase}" and write nothing after it.')),
    Spec("startend:quotation", _no_kwargs,
         ("Wrap your entire response with double quotation marks.",
          "Put your whole answer inside double quotation marks.")),
)}
"""Every registered IFEval type's sampling and rendering, by id."""
