"""A deterministic, model-free discriminator: word-overlap F1 between response and reference.

It needs no weights and no device, which makes it the scorer for CPU demos and for tests that
must know every score in advance. It measures surface closeness to the expert only (no meaning),
so it is a stand-in for the reward model in small runs, not a substitute for it in real ones.

    words(t)  = runs of letters and digits in t (a multiset), lower-cased unless case-sensitive,
                plus every punctuation mark as a token of its own when punctuation counts
    overlap   = |words(response) ∩ words(reference)|   (multiset intersection)
    precision = overlap / |words(response)|,  recall = overlap / |words(reference)|
    score     = 2 * precision * recall / (precision + recall),  0 when overlap is 0

By default (case-insensitive, punctuation ignored) it is blind to IFEval's case and punctuation
constraints; `case_sensitive` and `punctuation` make a response that writes like the expert
(its case, its marks) score higher.

Both empty: 1.0 (identical); exactly one empty: 0.0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from megatron_uniapl.discriminator.base import check_triples

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_WORD_OR_MARK = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)


def words(text: str, case_sensitive: bool = False, punctuation: bool = False) -> Counter:
    """The multiset of alphanumeric words of `text` (lower-cased unless `case_sensitive`), with
    each punctuation mark a token of its own when `punctuation`."""
    found = (_WORD_OR_MARK if punctuation else _WORD).findall(text)
    return Counter(found if case_sensitive else (w.lower() for w in found))


def overlap_f1(response: str, reference: str, case_sensitive: bool = False, punctuation: bool = False) -> float:
    """Word-overlap F1 of `response` against `reference`, in [0, 1] (formula in the module doc)."""
    r = words(response, case_sensitive, punctuation)
    g = words(reference, case_sensitive, punctuation)
    if not r and not g:
        return 1.0
    common = sum((r & g).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(r.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


class OverlapF1Scorer:
    """`Discriminator` scoring each response by its word-overlap F1 with the expert reference."""

    def __init__(self, case_sensitive: bool = False, punctuation: bool = False):
        self.case_sensitive, self.punctuation = case_sensitive, punctuation

    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """One F1 in [0, 1] per triple; the prompt is not used."""
        check_triples(prompts, references, responses)
        return [overlap_f1(y, r, self.case_sensitive, self.punctuation) for r, y in zip(references, responses)]
