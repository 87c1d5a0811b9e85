"""vivace_bench.stats: the one quantile convention every bench reports, and the bootstrap interval built on it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vivace_bench.stats import difference, median, paired_bootstrap, percentile


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([10.0, 0.0], 0.95) == pytest.approx(9.5)
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0 and percentile([3.0, 1.0, 2.0], 1.0) == 3.0


def test_percentile_is_numpys_default() -> None:
    rng = random.Random(0)
    for n in (1, 2, 5, 20, 101):
        xs = [rng.uniform(0, 10) for _ in range(n)]
        for q in (0.0, 0.025, 0.5, 0.9, 0.95, 0.975, 1.0):
            assert percentile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


def test_percentile_of_nothing_is_none_and_q_is_a_fraction() -> None:
    assert percentile([], 0.95) is None
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], 95)


def test_median_is_the_half_quantile_rounded() -> None:
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert median([0.123456, 0.2]) == 0.1617
    assert median([]) is None


def test_paired_bootstrap_brackets_the_difference() -> None:
    a = [1] * 30 + [0] * 10
    b = [1] * 20 + [0] * 20
    lo, hi = paired_bootstrap(a, b)
    assert lo is not None and hi is not None and lo < 0.25 < hi
    assert paired_bootstrap([], []) == (None, None)
    assert difference(a, b)["ci95"] == [lo, hi]
