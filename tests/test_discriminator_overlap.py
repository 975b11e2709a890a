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


def test_case_and_punctuation_aware_overlap_by_hand():
    reference, response = "SWIMMING, That is all.", "swimming That is all"
    # Default: {swimming, that, is, all} both sides -> 1.0, blind to case and marks.
    assert OverlapF1Scorer().score(["p"], [reference], [response]) == [1.0]
    # Case-sensitive: reference {SWIMMING, That, is, all}, response {swimming, That, is, all}:
    # overlap 3 of 4 each side -> F1 = 3/4.
    assert OverlapF1Scorer(case_sensitive=True).score(["p"], [reference], [response]) == [0.75]
    # Punctuation: reference {swimming, ",", that, is, all, "."} (6), response 4 words, overlap 4:
    # precision 1, recall 4/6 -> F1 = 2 * (2/3) / (5/3) = 4/5.
    assert OverlapF1Scorer(punctuation=True).score(["p"], [reference], [response]) == pytest.approx([0.8])
    # Both: overlap {That, is, all} = 3; precision 3/4, recall 3/6 -> F1 = 2 * (3/8) / (5/4) = 3/5.
    both = OverlapF1Scorer(case_sensitive=True, punctuation=True)
    assert both.score(["p"], [reference], [response]) == pytest.approx([0.6])
    assert both.score(["p"], [reference], [reference]) == [1.0]


def test_a_cotrained_template_that_shows_the_reference_is_refused():
    from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig

    with pytest.raises(ValueError, match=r"template shows the discriminator the expert reference"):
        CoTrainedDiscriminatorConfig(template="{prompt} {reference} {response}").validate()
    CoTrainedDiscriminatorConfig(template="{prompt} {{reference}} {response}").validate()  # literal braces
