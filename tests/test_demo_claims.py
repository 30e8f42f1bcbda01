"""The demo's claims: paired by seed, computed from the per-seed rows, checked against scipy's paired t test."""

from __future__ import annotations

import numpy as np
import pytest

from clipvip_apps.demo.claims import Claim, claims_markdown, evaluate_claims, metric_values, verdict
from clipvip_apps.demo.pipeline import low_data_subset


def _run(r1: float, r5: float, r10: float, twin: float = 50.0, zs: float | None = None, label: float | None = None):
    res = {
        "t2v": {"R@1": r1, "R@5": r5, "R@10": r10},
        "t2v_direction": {"R@1": r1 / 2},
        "twin_accuracy_direction": twin,
    }
    if zs is not None:
        res["zero_shot"] = {"t2v": {"R@1": zs, "R@5": zs, "R@10": zs}, "label_accuracy": label}
    return res


def test_claims_are_paired_by_seed_and_match_scipy() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(0)
    a_vals, b_vals, seeds = [], [], []
    for s in range(6):
        a = _run(*rng.uniform(10, 60, 3), zs=float(rng.uniform(5, 30)), label=float(rng.uniform(10, 90)))
        b = _run(*rng.uniform(10, 60, 3), zs=float(rng.uniform(5, 30)), label=float(rng.uniform(10, 90)))
        a_vals.append(metric_values(a))
        b_vals.append(metric_values(b))
        seeds.append({"seed": s, "table2": {}, "table34": {"A": a, "B": b}})
    seeds.append({"seed": 6, "table2": {}, "table34": {"A": _run(1, 2, 3)}})  # B missing: not a pair
    claims = (Claim("A > B", "table34", "A", "B", "Mean"), Claim("A > B zs", "table34", "A", "B", "zsLabel"))
    out = evaluate_claims(seeds, claims)
    for entry, metric in zip(out, ("Mean", "zsLabel")):
        xa = [v[metric] for v in a_vals]
        xb = [v[metric] for v in b_vals]
        ci = ttest_rel(xa, xb).confidence_interval(0.95)
        assert entry["n"] == 6 and entry["metric"] == metric
        assert entry["mean_difference"] == pytest.approx(np.mean(np.subtract(xa, xb)))
        assert entry["interval"] == pytest.approx([ci.low, ci.high])
        assert entry["holds"] == (ci.low > 0)
        assert entry["diffs"] == pytest.approx(list(np.subtract(xa, xb)))
    # Mean is the mean of R@1/5/10
    assert a_vals[0]["Mean"] == pytest.approx(
        np.mean([seeds[0]["table34"]["A"]["t2v"][k] for k in ("R@1", "R@5", "R@10")])
    )


def test_claim_verdicts() -> None:
    seeds = [
        {"table2": {}, "table34": {"A": _run(20 + d, 40 + d, 60 + d), "B": _run(20, 40, 60)}} for d in (3, 4, 5, 6)
    ]
    holds = evaluate_claims(seeds, (Claim("A > B", "table34", "A", "B", "Mean"),))[0]
    assert holds["holds"] and verdict(holds) == "holds" and holds["mean_difference"] == pytest.approx(4.5)
    rev = evaluate_claims(seeds, (Claim("B > A", "table34", "B", "A", "Mean"),))[0]
    assert not rev["holds"] and verdict(rev).startswith("reversed")
    one = evaluate_claims(seeds[:1], (Claim("A > B", "table34", "A", "B", "Mean"),))[0]
    assert one["holds"] is None and one["interval"] is None and one["n"] == 1
    table = claims_markdown([holds, rev, one])
    assert "| A > B |" in table and "reversed" in table and "not decided" in table


def test_bad_claims_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        Claim("x", "table34", "A", "B", "R@7")
    with pytest.raises(ValueError, match="table"):
        Claim("x", "table9", "A", "B", "Mean")


def test_low_data_subset_is_seeded_and_sized() -> None:
    idx = low_data_subset(300, 0.1, 0)
    assert len(idx) == 30 and idx == sorted(set(idx)) and all(0 <= i < 300 for i in idx)
    assert idx == low_data_subset(300, 0.1, 0) and idx != low_data_subset(300, 0.1, 1)
    assert len(low_data_subset(5, 0.1, 0)) == 2  # at least 2 clips (a contrastive batch needs negatives)
