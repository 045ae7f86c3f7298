"""Statistics of `cdseg experiment` against known values of the t distribution and the binomial."""

from __future__ import annotations

import math

import pytest

from cdseg.experiment.stats import betainc, estimate, paired, sign_test_p, t_cdf, t_ppf


@pytest.mark.parametrize(("q", "df", "expected"), [
    (0.975, 1, 12.7062047), (0.975, 2, 4.3026527), (0.975, 4, 2.7764451), (0.975, 9, 2.2621572),
    (0.95, 29, 1.6991270), (0.995, 5, 4.0321430),
])
def test_t_quantiles_match_the_tables(q: float, df: int, expected: float) -> None:
    assert t_ppf(q, df) == pytest.approx(expected, abs=1e-6)
    assert t_cdf(expected, df) == pytest.approx(q, abs=1e-7)  # the tables round to 7 decimals


def test_incomplete_beta_known_values() -> None:
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - sum_{k<2} C(4,k) .4^k .6^(4-k)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)


def test_estimate_interval() -> None:
    e = estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    assert e.mean == 3.0 and e.sd == pytest.approx(math.sqrt(2.5))
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert (e.low, e.high) == (pytest.approx(3 - half, abs=1e-6), pytest.approx(3 + half, abs=1e-6))
    single = estimate([0.7])
    assert single.sd is None and single.low is None


def test_sign_test_exact() -> None:
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert sign_test_p(4, 1) == pytest.approx(2 * 6 / 32)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0


def test_paired_differences() -> None:
    a, b = [0.62, 0.60, 0.65, 0.61, 0.63], [0.60, 0.59, 0.62, 0.61, 0.60]
    p = paired(a, b)
    assert (p.wins, p.losses, p.ties) == (4, 0, 1)
    assert p.diff.mean == pytest.approx(0.018)
    # t = 0.018 / (sd / sqrt(5)) with sd of (.02, .01, .03, 0, .03): p from the t(4) distribution
    sd = math.sqrt(sum((d - 0.018) ** 2 for d in (0.02, 0.01, 0.03, 0.0, 0.03)) / 4)
    t = 0.018 / (sd / math.sqrt(5))
    assert p.t_p == pytest.approx(2 * (1 - t_cdf(t, 4)))
    assert 0.02 < p.t_p < 0.06 and p.sign_p == pytest.approx(0.125)
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])
