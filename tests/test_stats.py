"""``clipvip.eval.stats``: paired intervals against scipy and against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from clipvip.eval.stats import paired_bootstrap, paired_t


def test_paired_t_matches_scipy_ttest_rel() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(3)
    for n in (2, 5, 12):
        a = rng.normal(3.0, 2.0, n)
        b = a - rng.normal(0.5, 1.0, n)
        for conf in (0.9, 0.95, 0.99):
            res = paired_t(a, b, conf)
            ci = ttest_rel(a, b).confidence_interval(conf)
            assert res.low == pytest.approx(ci.low, rel=1e-10)
            assert res.high == pytest.approx(ci.high, rel=1e-10)
            assert res.mean == pytest.approx(float(np.mean(a - b)))
            assert res.n == n


def test_paired_t_by_hand() -> None:
    # diffs 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451051977987 (tables)
    res = paired_t([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    half = 2.7764451051977987 * np.sqrt(2.5) / np.sqrt(5)
    assert res.mean == 3.0 and res.diffs == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert (res.low, res.high) == pytest.approx((3 - half, 3 + half))
    assert res.above_zero  # 3 - 1.963 > 0
    # same diffs around 0: the interval straddles 0, the claim does not hold
    res0 = paired_t([0, 1, 2, 3, 4], [2, 2, 2, 2, 2])
    assert res0.mean == 0.0 and res0.low < 0 < res0.high and not res0.above_zero


def test_paired_bootstrap_brackets_the_mean_and_is_seeded() -> None:
    a, b = [5.0, 7.0, 6.0, 9.0, 8.0, 4.0], [4.0, 4.0, 5.0, 6.0, 7.0, 4.0]
    res = paired_bootstrap(a, b, resamples=4000, seed=1)
    d = np.subtract(a, b)
    assert res.mean == pytest.approx(d.mean())
    # percentile bootstrap of a mean lies inside [min diff, max diff] and around the mean
    assert d.min() <= res.low <= d.mean() <= res.high <= d.max()
    assert res == paired_bootstrap(a, b, resamples=4000, seed=1)
    # identical diffs: zero-width interval at that value
    const = paired_bootstrap([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert (const.low, const.mean, const.high) == pytest.approx((2.0, 2.0, 2.0))


@pytest.mark.parametrize("fn", [paired_t, paired_bootstrap])
def test_bad_input_is_rejected(fn) -> None:
    with pytest.raises(ValueError, match="equal-length"):
        fn([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        fn([1.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        fn([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidence"):
        fn([1.0, 2.0], [0.0, 0.0], 1.5)
