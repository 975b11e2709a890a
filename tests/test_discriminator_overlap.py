"""The deterministic word-overlap scorer, by hand."""

import pytest

from megatron_uniapl.discriminator.base import Discriminator
from megatron_uniapl.discriminator.overlap import OverlapF1Scorer


def test_overlap_scorer_hand_values():
    scorer = OverlapF1Scorer()
    assert isinstance(scorer, Discriminator)
    # response words {the, cat, sat, sat}, reference {the, cat, ran}: overlap 2 (the, cat);
    # precision 2/4, recall 2/3 -> F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = 4/7.
    scores = scorer.score(["p"] * 4, ["The cat ran.", "x", "", "a b"], ["the CAT sat, sat!", "y", "", "a b"])
    assert scores == pytest.approx([4 / 7, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"references\[0\] is NoneType"):
        scorer.score(["p"], [None], ["y"])
