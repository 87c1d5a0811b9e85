"""The statistics every bench reports: quantiles, and confidence intervals for small-sample rates.

Quantiles have one convention here, used by every figure: ``percentile(xs, q)``
with q in 0..1 interpolates linearly between the closest ranks (numpy's
default, Hyndman-Fan type 7), and ``median`` is its q = 0.5.


Why these: the safety sets hold a few hundred prompts, split into six
categories of about fifty, so a rate's normal-approximation interval goes
below 0 or above 1 at the rates that matter (near 0 and 1). Wilson's score
interval does not; a difference between two configurations run on the same
prompts is paired, so its interval comes from a paired bootstrap over
prompts (Newcombe's hybrid score interval, for independent samples, is given
beside it for readers who expect it).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

Z95 = 1.959963984540054


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (q in 0..1) of ``xs``, linear between the closest ranks; None for no values.

    Position ``q * (n - 1)`` in the sorted values, interpolated between its two
    neighbours: numpy's default (``method="linear"``), so p50 is the median and
    p95 of ``[0, 10]`` is 9.5.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in 0..1, got {q!r}")
    if not xs:
        return None
    ordered = sorted(xs)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float | None:
    """The median (``percentile`` at 0.5), rounded to 4 places as every report writes it; None for no values."""
    mid = percentile(xs, 0.5)
    return None if mid is None else round(mid, 4)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for ``successes / n``; (None, None) when n is 0."""
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float | None, float | None]:
    """Newcombe's hybrid score interval (method 10) for p1 - p2 of two independent samples."""
    if n1 <= 0 or n2 <= 0:
        return None, None
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    assert l1 is not None and u1 is not None and l2 is not None and u2 is not None
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return round(lo, 4), round(hi, 4)


def paired_bootstrap(a: Sequence[int], b: Sequence[int], reps: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    """95% percentile interval of mean(a) - mean(b) over prompts resampled with replacement (a, b paired 0/1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None, None
    rng = random.Random(seed)
    diffs = [ai - bi for ai, bi in zip(a, b)]
    means = [sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps)]
    lo, hi = percentile(means, 0.025), percentile(means, 0.975)
    return (None, None) if lo is None or hi is None else (round(lo, 4), round(hi, 4))


def rate(flags: Sequence[int | bool]) -> dict[str, float | int | list[float | None] | None]:
    """A rate with its sample size and Wilson interval."""
    k, n = sum(int(f) for f in flags), len(flags)
    lo, hi = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "k": k, "n": n, "ci95": [lo, hi]}


def difference(a: Sequence[int | bool], b: Sequence[int | bool]) -> dict[str, float | int | None | list[float | None]]:
    """mean(a) - mean(b) of two 0/1 series over the same prompts, with paired-bootstrap and Newcombe intervals."""
    ai, bi = [int(x) for x in a], [int(x) for x in b]
    n = len(ai)
    if n == 0 or n != len(bi):
        return {"delta": None, "n": n, "ci95": [None, None], "ci95_newcombe": [None, None]}
    lo, hi = paired_bootstrap(ai, bi)
    return {
        "delta": round((sum(ai) - sum(bi)) / n, 4),
        "n": n,
        "ci95": [lo, hi],
        "ci95_newcombe": list(newcombe(sum(ai), n, sum(bi), n)),
    }
