"""Paired comparisons across seeds: mean difference with a 95% interval, and whether a claim holds.

Ablation claims ("OCL beats subtitles only") compare two settings run with the SAME seeds (same data, same initial
weights, same data order). Pairing by seed removes the seed-to-seed variation both settings share, so the interval
is about the difference itself. Two intervals are offered:

- ``paired_t``: Student's t interval of the mean paired difference (what ``scipy.stats.ttest_rel`` reports);
- ``paired_bootstrap``: percentile bootstrap of the mean paired difference (no normality assumption; with few
  seeds it is narrower than t, so t is the default).

A claim "A > B" holds when the whole interval lies above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired runs, its ``confidence`` interval [low, high], and the per-pair diffs."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    diffs: tuple[float, ...]

    @property
    def above_zero(self) -> bool:
        """True when the interval excludes 0 on the positive side (the claim "a > b" holds)."""
        return self.low > 0.0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["diffs"] = list(self.diffs)
        return d


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need two equal-length 1-D sequences, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples contain NaN or inf")
    return x - y


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Student's t interval for the mean of ``a[i] - b[i]``: mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)."""
    from scipy.stats import t as student_t

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = _diffs(a, b)
    n = len(d)
    mean = float(d.mean())
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n, confidence, "paired t", tuple(d.tolist()))


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> PairedDifference:
    """Percentile bootstrap interval of the mean of ``a[i] - b[i]`` (pairs resampled with replacement)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = _diffs(a, b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return PairedDifference(
        float(d.mean()), float(low), float(high), len(d), confidence, "paired bootstrap", tuple(d.tolist())
    )
