"""avg@k, unbiased pass@k, maj@k and success histograms: hand-computed values and properties."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from skpo.evaluation.metrics import (
    avg_at_k,
    maj_at_k,
    majority_vote,
    mean_pass_at_k,
    pass_at_k,
    pass_k_values,
    success_histogram,
    success_rates,
)

# ----------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (8, 0, 4, 0.0),
        (8, 5, 4, 1.0),  # n - c = 3 < k: every 4-subset holds a correct sample
        (3, 3, 1, 1.0),
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_1_is_fraction_correct() -> None:
    for n in range(1, 12):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_monotone_in_k() -> None:
    for n in range(1, 16):
        for c in range(n + 1):
            values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values)), (n, c, values)


def test_pass_at_n_is_one_iff_any_correct() -> None:
    for n in range(1, 10):
        assert pass_at_k(n, 0, n) == 0.0
        for c in range(1, n + 1):
            assert pass_at_k(n, c, n) == 1.0


def test_pass_at_k_equals_brute_force_over_subsets() -> None:
    """The estimator is the fraction of k-subsets of the n samples that hold a correct one."""
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n() -> None:
    """Product form agrees with the exact rational value where binomials are astronomically large."""
    for n, c, k in [(2000, 10, 100), (1000, 1, 1), (500, 250, 200), (4096, 3, 1024)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k() -> None:
    # problems with 0, 1, 2 of 4 correct; pass@2 = (0 + 1/2 + 5/6) / 3
    assert mean_pass_at_k([0, 1, 2], 4, 2) == pytest.approx((0 + 0.5 + 5 / 6) / 3)
    # per-problem n
    assert mean_pass_at_k([1, 1], [2, 4], 1) == pytest.approx((0.5 + 0.25) / 2)
    with pytest.raises(ValueError):
        mean_pass_at_k([], 4, 1)
    with pytest.raises(ValueError):
        mean_pass_at_k([1, 2], [4], 1)


def test_pass_k_values() -> None:
    assert pass_k_values(1) == [1]
    assert pass_k_values(2) == [1, 2]
    assert pass_k_values(8) == [1, 2, 4, 8]
    assert pass_k_values(6) == [1, 2, 4, 6]
    assert pass_k_values(16) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError):
        pass_k_values(0)


# ----------------------------------------------------------------------------- avg@k


def test_avg_at_k_hand_values() -> None:
    assert avg_at_k([[1, 0, 0, 1], [1, 1, 1, 1]]) == pytest.approx(0.75)
    assert avg_at_k([[True, False], [False, False], [True, True]]) == pytest.approx(0.5)
    # each problem weighs the same, whatever its number of samples
    assert avg_at_k([[1], [0, 0, 0, 1]]) == pytest.approx((1 + 0.25) / 2)
    with pytest.raises(ValueError):
        avg_at_k([])
    with pytest.raises(ValueError):
        avg_at_k([[1], []])


def test_avg_at_k_equals_mean_pass_at_1() -> None:
    rows = [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]]
    assert avg_at_k(rows) == pytest.approx(mean_pass_at_k([sum(r) for r in rows], 4, 1))


# ----------------------------------------------------------------------------- maj@k


def test_majority_vote_counts_and_ties() -> None:
    assert majority_vote(["3", "5", "5", "7"]) == ("5", 1)
    # tie 2-2: the answer seen first ("3", at index 0) wins
    assert majority_vote(["3", "5", "5", "3"]) == ("3", 0)
    assert majority_vote(["5", "3", "3", "5"]) == ("5", 0)
    # None and blank answers do not vote; whitespace is stripped before comparing
    assert majority_vote([None, "2", " 2 ", "", "4"]) == ("2", 1)
    assert majority_vote([None, None]) == (None, None)
    assert majority_vote([]) == (None, None)


def test_maj_at_k_hand_values() -> None:
    answers = [
        ["1", "2", "2", None],  # majority "2" (correct)
        ["7", "7", "8", "8"],  # tie -> "7" (wrong)
        [None, None, None, None],  # no answer -> unsolved
        ["9", "4", "4", "4"],  # majority "4" wrong, though one sample is right
    ]
    correct = [
        [False, True, True, False],
        [False, False, True, True],
        [False, False, False, False],
        [True, False, False, False],
    ]
    assert maj_at_k(answers, correct) == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        maj_at_k(answers[:2], correct)
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [[True, False]])


def test_maj_at_1_equals_accuracy_when_every_sample_answers() -> None:
    answers = [["3"], ["4"], ["5"]]
    correct = [[True], [False], [True]]
    assert maj_at_k(answers, correct) == pytest.approx(avg_at_k(correct))


# ----------------------------------------------------------------------------- histograms


def test_success_histogram_and_rates() -> None:
    counts = [0, 4, 2, 2, 0, 1]
    assert success_histogram(counts, 4) == [2, 1, 2, 0, 1]
    assert sum(success_histogram(counts, 4)) == len(counts)
    assert success_rates(counts, 4) == [0.0, 1.0, 0.5, 0.5, 0.0, 0.25]
    with pytest.raises(ValueError):
        success_histogram([5], 4)
    with pytest.raises(ValueError):
        success_histogram([1], 0)
