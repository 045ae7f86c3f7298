"""Statistics over seeds: means with Student-t intervals, paired differences, the paired t-test and the sign test.

Pure Python (no SciPy): the t distribution through the regularised incomplete beta function, evaluated
with its continued fraction (Lentz's method), as in any numerical library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (bisection on the CDF; |error| < 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` values with their standard deviation and a two-sided confidence interval (None if n < 2)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    confidence: float


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean, sample standard deviation and Student-t interval of `values` (NaN-free)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n < 2:
        return Estimate(n, mean, None, None, None, confidence)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class Paired:
    """Paired differences a - b (same seed, same data): their estimate, the t-test and the sign test."""

    diff: Estimate
    t_p: float | None
    sign_p: float
    wins: int
    losses: int
    ties: int


def paired_t_p(diffs: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired t-test of mean(diffs) = 0 (None below 2 pairs; 1 or 0 for sd = 0)."""
    n = len(diffs)
    if n < 2:
        return None
    e = estimate(diffs)
    assert e.sd is not None
    if e.sd == 0:
        return 1.0 if e.mean == 0 else 0.0
    t = e.mean / (e.sd / math.sqrt(n))
    return 2.0 * (1.0 - t_cdf(abs(t), n - 1))


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test (binomial, p = 1/2) of wins against losses; ties are left out."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Compare two methods run on the same seeds: a[i] and b[i] belong to seed i."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return Paired(estimate(diffs, confidence), paired_t_p(diffs), sign_test_p(wins, losses), wins, losses,
                  len(diffs) - wins - losses)
