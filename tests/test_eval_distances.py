"""Wasserstein-1 and KS statistic on hand-computed cases."""

from __future__ import annotations

import pytest

from megatron_uniapl.eval.distances import ks_statistic, summary, wasserstein_1


@pytest.mark.parametrize("a,b,w1,ks", [
    ([1, 2, 3], [3, 1, 2], 0.0, 0.0),
    ([0], [3], 3.0, 1.0),
    ([0, 1], [0, 2], 0.5, 0.5),  # F differs by 1/2 on [1, 2)
    ([0, 0, 1], [0, 1, 1], 1 / 3, 1 / 3),
    ([0, 4], [1, 2, 3], 4 / 3, 1 / 2),  # |F_a - F_b| = 1/2, 1/6, 1/6, 1/2 on unit intervals
    ([-1.5, 0.5], [0.5], 1.0, 0.5),  # move 1/2 of the mass by 2
])
def test_hand_values(a, b, w1, ks):
    assert wasserstein_1(a, b) == pytest.approx(w1, abs=1e-12)
    assert wasserstein_1(b, a) == pytest.approx(w1, abs=1e-12)
    assert ks_statistic(a, b) == pytest.approx(ks, abs=1e-12)
    assert ks_statistic(b, a) == pytest.approx(ks, abs=1e-12)


def test_w1_of_a_shift_is_the_shift_and_ks_of_a_stretch():
    a = [0.3, 1.7, 2.2, 9.0]
    assert wasserstein_1(a, [x + 2.5 for x in a]) == pytest.approx(2.5)
    # Against [3, 17, 22, 90]: at x = 9, F_a = 1 and F_b = 1/4.
    assert ks_statistic(a, [10 * x for x in a]) == pytest.approx(0.75)


def test_bad_inputs_and_summary():
    with pytest.raises(ValueError, match="a is empty"):
        wasserstein_1([], [1])
    with pytest.raises(ValueError, match="b has non-finite"):
        ks_statistic([1], [float("nan")])
    assert summary([3, 1, 2, 6]) == {"count": 4, "mean": 3.0, "std": pytest.approx(1.8708287),
                                     "min": 1.0, "median": 2.5, "max": 6.0}
