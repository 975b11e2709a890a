"""A deterministic, model-free discriminator: word-overlap F1 between response and reference.

It needs no weights and no device, which makes it the scorer for CPU demos and for tests that
must know every score in advance. It measures surface closeness to the expert only (no meaning),
so it is a stand-in for the reward model in small runs, not a substitute for it in real ones.

    words(t)  = lower-cased runs of letters and digits in t (a multiset)
    overlap   = |words(response) ∩ words(reference)|   (multiset intersection)
    precision = overlap / |words(response)|,  recall = overlap / |words(reference)|
    score     = 2 * precision * recall / (precision + recall),  0 when overlap is 0

Both empty: 1.0 (identical); exactly one empty: 0.0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from megatron_uniapl.discriminator.base import check_triples

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> Counter:
    """The multiset of lower-cased alphanumeric words of `text`."""
    return Counter(w.lower() for w in _WORD.findall(text))


def overlap_f1(response: str, reference: str) -> float:
    """Word-overlap F1 of `response` against `reference`, in [0, 1] (formula in the module doc)."""
    r, g = words(response), words(reference)
    if not r and not g:
        return 1.0
    common = sum((r & g).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(r.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


class OverlapF1Scorer:
    """`Discriminator` scoring each response by its word-overlap F1 with the expert reference."""

    def score(
        self, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
    ) -> list[float]:
        """One F1 in [0, 1] per triple; the prompt is not used."""
        check_triples(prompts, references, responses)
        return [overlap_f1(y, r) for r, y in zip(references, responses)]
