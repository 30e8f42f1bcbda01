"""The paper's claims as the demo tests them: paired by seed, mean difference with a 95% interval.

Each ``Claim`` says "row ``a`` scores higher than row ``b`` on ``metric``" in one table. The claims are part of
``DemoConfig`` (written before running, never picked from results). For each claim the per-seed values of the two
rows come from the same seed (same world, same initial weights, same data order), so the interval is the paired
one of ``clipvip.eval.stats``; the claim holds when the interval lies above 0. Claims that fail are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipvip.eval.stats import paired_t

# metric key -> (what it is, how to read it from one evaluated run)
METRICS: dict[str, str] = {
    "Mean": "mean of t2v R@1/5/10 after fine-tuning",
    "R@1": "t2v R@1 after fine-tuning",
    "dirR@1": "t2v R@1 on motion-direction queries after fine-tuning",
    "dirTwin": "direction twin accuracy after fine-tuning (own clip vs its time reversal)",
    "lowMean": "mean of t2v R@1/5/10 after low-data (10%) fine-tuning",
    "zsMean": "zero-shot mean of t2v R@1/5/10 (no fine-tuning)",
    "zsLabel": "zero-shot label-prompt classification accuracy of the motion (no fine-tuning)",
}


@dataclass(frozen=True)
class Claim:
    """ "``a`` > ``b`` on ``metric``" in ``table`` ("table2" or "table34")."""

    name: str
    table: str
    a: str
    b: str
    metric: str
    paper: str = ""  # where the paper makes the claim

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"claim {self.name!r}: unknown metric {self.metric!r}; expected one of {tuple(METRICS)}")
        if self.table not in ("table2", "table34"):
            raise ValueError(f"claim {self.name!r}: table must be 'table2' or 'table34', got {self.table!r}")


NONE, SUBS, CAPS, OCL = "none (CLIP-ViP)", "subtitles (L_VS)", "captions (L_VC)", "OCL (d)"
VIP, MEANPOOL, FULLATTN = "ViP (M=4)", "MeanPool", "Full Attention"

DEFAULT_CLAIMS: tuple[Claim, ...] = (
    Claim("ViP > MeanPool, direction twin acc.", "table2", VIP, MEANPOOL, "dirTwin", "Table 2"),
    Claim("ViP > MeanPool, direction-query R@1", "table2", VIP, MEANPOOL, "dirR@1", "Table 2"),
    Claim("ViP > Full Attention, mean R@1/5/10", "table2", VIP, FULLATTN, "Mean", "Table 2"),
    Claim("ViP > Full Attention, direction twin acc.", "table2", VIP, FULLATTN, "dirTwin", "Table 2"),
    Claim("OCL (d) > none, fine-tuned", "table34", OCL, NONE, "Mean", "Table 3"),
    Claim("OCL (d) > subtitles only, fine-tuned", "table34", OCL, SUBS, "Mean", "Table 4"),
    Claim("OCL (d) > captions only, fine-tuned", "table34", OCL, CAPS, "Mean", "Table 4"),
    Claim("OCL (d) > none, 10% fine-tuning", "table34", OCL, NONE, "lowMean", "Table 3 (low-data regime)"),
    Claim("OCL (d) > subtitles only, 10% fine-tuning", "table34", OCL, SUBS, "lowMean", "Table 4 (low-data)"),
    Claim("OCL (d) > none, zero-shot retrieval", "table34", OCL, NONE, "zsMean", "Table 7"),
    Claim("OCL (d) > none, zero-shot label classification", "table34", OCL, NONE, "zsLabel", "Table 7"),
)


def metric_values(res: dict[str, Any]) -> dict[str, float]:
    """Every claim metric available in one evaluated run (``pipeline.run_seed``'s row dict)."""
    t = res["t2v"]
    out = {
        "Mean": (t["R@1"] + t["R@5"] + t["R@10"]) / 3,
        "R@1": t["R@1"],
        "dirR@1": res["t2v_direction"]["R@1"],
        "dirTwin": res["twin_accuracy_direction"],
    }
    if "low_data" in res:
        lt = res["low_data"]["t2v"]
        out["lowMean"] = (lt["R@1"] + lt["R@5"] + lt["R@10"]) / 3
    zs = res.get("zero_shot")
    if zs is not None:
        zt = zs["t2v"]
        out["zsMean"] = (zt["R@1"] + zt["R@5"] + zt["R@10"]) / 3
        if "label_accuracy" in zs:
            out["zsLabel"] = zs["label_accuracy"]
    return out


def evaluate_claims(
    seeds: list[dict[str, Any]], claims: tuple[Claim, ...], confidence: float = 0.95
) -> list[dict[str, Any]]:
    """One entry per claim: name, metric, rows, mean paired difference (a - b), interval, n, holds, per-seed diffs.
    ``holds`` is None (not decided) when fewer than 2 seeds have both rows."""
    out = []
    for c in claims:
        a, b = [], []
        for s in seeds:
            rows = s.get(c.table, {})
            if c.a in rows and c.b in rows:
                va, vb = metric_values(rows[c.a]), metric_values(rows[c.b])
                if c.metric in va and c.metric in vb:
                    a.append(va[c.metric])
                    b.append(vb[c.metric])
        entry: dict[str, Any] = {
            "name": c.name,
            "metric": c.metric,
            "metric_text": METRICS[c.metric],
            "a": c.a,
            "b": c.b,
            "paper": c.paper,
            "n": len(a),
            "mean_a": float(np.mean(a)) if a else None,
            "mean_b": float(np.mean(b)) if b else None,
        }
        if len(a) >= 2:
            d = paired_t(a, b, confidence)
            entry.update(
                mean_difference=d.mean,
                interval=[d.low, d.high],
                confidence=confidence,
                method=d.method,
                diffs=list(d.diffs),
                holds=d.above_zero,
            )
        else:
            diffs = [x - y for x, y in zip(a, b)]
            entry.update(
                mean_difference=float(np.mean(diffs)) if diffs else None,
                interval=None,
                confidence=confidence,
                method="paired t",
                diffs=diffs,
                holds=None,
            )
        out.append(entry)
    return out


def verdict(entry: dict[str, Any]) -> str:
    """'holds' / 'fails (interval includes 0)' / 'reversed (interval below 0)' / 'n < 2: not decided'."""
    if entry["holds"] is None:
        return "n < 2: not decided"
    if entry["holds"]:
        return "holds"
    return "reversed (interval below 0)" if entry["interval"][1] < 0 else "fails (interval includes 0)"


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    lines = [
        "| claim | paper | metric | A | B | mean A − B | 95% interval | n | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in claims:
        iv = f"[{e['interval'][0]:+.1f}, {e['interval'][1]:+.1f}]" if e["interval"] else "—"
        md = f"{e['mean_difference']:+.1f}" if e["mean_difference"] is not None else "—"
        ma = f"{e['mean_a']:.1f}" if e["mean_a"] is not None else "—"
        mb = f"{e['mean_b']:.1f}" if e["mean_b"] is not None else "—"
        lines.append(
            f"| {e['name']} | {e['paper']} | {e['metric']} | {ma} | {mb} | {md} | {iv} | {e['n']} | {verdict(e)} |"
        )
    return "\n".join(lines)


def plot_claims(claims: list[dict[str, Any]], path: Path) -> None:
    """Paired differences (A − B) per claim with their 95% intervals; the dashed line is 0 (no difference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipvip_apps.demo.report import _atomic_savefig

    shown = [e for e in claims if e["mean_difference"] is not None]
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(shown) + 1.2))
    for i, e in enumerate(shown):
        y = len(shown) - 1 - i
        colour = "tab:green" if e["holds"] else ("tab:red" if e["interval"] and e["interval"][1] < 0 else "tab:grey")
        if e["interval"]:
            lo, hi = e["interval"]
            ax.errorbar(
                e["mean_difference"],
                y,
                xerr=[[e["mean_difference"] - lo], [hi - e["mean_difference"]]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        else:
            ax.plot(e["mean_difference"], y, "o", color=colour)
        ax.scatter(e["diffs"], [y] * len(e["diffs"]), s=8, color=colour, alpha=0.35)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(shown)), [f"{e['name']} (n={e['n']})" for e in reversed(shown)], fontsize=8)
    ax.set_xlabel("paired difference A − B (points; dot = mean, bar = 95% t interval, faint = seeds)")
    ax.set_title("Claims: green holds, grey interval includes 0, red reversed", fontsize=10)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)
