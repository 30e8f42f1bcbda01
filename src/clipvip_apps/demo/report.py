"""Tables (printed + report.md), plots (training curves, R@K bars) and the example-query result grid."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS: tuple[tuple[str, str], ...] = (
    ("R@1", "t2v R@1"),
    ("R@5", "t2v R@5"),
    ("R@10", "t2v R@10"),
    ("Mean", "Mean R@1/5/10"),
    ("dirR@1", "direction-query R@1"),
    ("twin", "twin acc. (%)"),
    ("dirTwin", "direction twin acc. (%)"),
)


def _row_values(res: dict[str, Any]) -> dict[str, float]:
    t = res["t2v"]
    return {
        "R@1": t["R@1"],
        "R@5": t["R@5"],
        "R@10": t["R@10"],
        "Mean": (t["R@1"] + t["R@5"] + t["R@10"]) / 3,
        "dirR@1": res["t2v_direction"]["R@1"],
        "twin": res["twin_accuracy"],
        "dirTwin": res["twin_accuracy_direction"],
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """{table: {row: {col: {"mean", "std", "values"}}}} over seeds (std is the sample std; 0 for one seed)."""
    out: dict[str, Any] = {}
    for table in ("table2", "table34"):
        rows: dict[str, Any] = {}
        for name in dict.fromkeys(n for s in seeds for n in s[table]):
            runs = [s[table][name] for s in seeds if name in s[table]]
            vals = [_row_values(r) for r in runs]
            zs = [_row_values(r["zero_shot"]) for r in runs if "zero_shot" in r]
            rows[name] = {c: _stat([v[c] for v in vals]) for c, _ in COLUMNS}
            if zs:
                rows[name]["zero_shot"] = {c: _stat([v[c] for v in zs]) for c, _ in COLUMNS}
        out[table] = rows
    out["checks"] = _checks(seeds)
    return out


def _stat(xs: list[float]) -> dict[str, Any]:
    a = np.asarray(xs, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def _checks(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The claims the report states, per seed: ViP vs MeanPool on direction queries; captions vs subtitles."""
    checks: dict[str, Any] = {}
    t2 = [s["table2"] for s in seeds if s["table2"]]
    if t2 and all("ViP (M=4)" in t and "MeanPool" in t for t in t2):
        diff = [t["ViP (M=4)"]["twin_accuracy_direction"] - t["MeanPool"]["twin_accuracy_direction"] for t in t2]
        r1 = [t["ViP (M=4)"]["t2v_direction"]["R@1"] - t["MeanPool"]["t2v_direction"]["R@1"] for t in t2]
        checks["vip_minus_meanpool_direction_twin_acc"] = diff
        checks["vip_minus_meanpool_direction_R@1"] = r1
        checks["vip_beats_meanpool_on_direction"] = bool(all(d > 0 for d in diff) and np.mean(r1) > 0)
    t34 = [s["table34"] for s in seeds]
    for other in ("OCL (d)", "captions (L_VC)"):
        if all(other in t and "subtitles (L_VS)" in t for t in t34):
            d = [_row_values(t[other])["Mean"] - _row_values(t["subtitles (L_VS)"])["Mean"] for t in t34]
            checks[f"{other} minus subtitles, Mean R@1/5/10"] = d
    return checks


def _fmt(stat: dict[str, Any]) -> str:
    if len(stat["values"]) > 1:
        return f"{stat['mean']:.1f} ± {stat['std']:.1f}"
    return f"{stat['mean']:.1f}"


def markdown_table(rows: dict[str, Any], first: str, zero_shot: bool = False) -> str:
    head = [first] + [label for _, label in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cols in rows.items():
        src = cols.get("zero_shot") if zero_shot else cols
        if src is None:
            continue
        lines.append("| " + " | ".join([name] + [_fmt(src[c]) for c, _ in COLUMNS]) + " |")
    return "\n".join(lines)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_savefig(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def plot_curves(seeds: list[dict[str, Any]], path: Path, clip_curve: list[dict[str, Any]] | None = None) -> None:
    """Training loss per step for every stage (seed 0 solid, other seeds faint)."""
    if clip_curve:
        seeds = [dict(s, curves={"CLIP stage (image-text)": clip_curve, **s["curves"]}) for s in seeds]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(seeds[0]["curves"])
    groups = [
        ("CLIP stage", [n for n in names if n.startswith("CLIP")]),
        ("post-pretraining", [n for n in names if n.startswith("post-pretrain")]),
        ("fine-tuning", [n for n in names if n.startswith("fine-tune")]),
    ]
    groups = [(g, ns) for g, ns in groups if ns]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4), squeeze=False)
    for ax, (title, ns) in zip(axes[0], groups):
        for i, n in enumerate(ns):
            colour = f"C{i}"
            for si, s in enumerate(seeds):
                h = s["curves"].get(n, [])
                if not h:
                    continue
                y = np.asarray([r["loss"] for r in h])
                k = max(1, len(y) // 30)  # light smoothing: a moving average over ~1/30 of the run
                ys = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(
                    np.arange(len(ys)) + k,
                    ys,
                    color=colour,
                    alpha=1.0 if si == 0 else 0.3,
                    label=n if si == 0 else None,
                )
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("contrastive loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def plot_recall(summary: dict[str, Any], path: Path) -> None:
    """R@1/5/10 bars with seed std error bars, plus direction-query R@1 and twin accuracy, for both tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [
        ("Table 2: vision structure (fine-tuned from CLIP)", summary["table2"]),
        ("Tables 3-4: post-pretraining (ViP)", summary["table34"]),
    ]
    tables = [(t, r) for t, r in tables if r]
    cols = ["R@1", "R@5", "R@10", "dirR@1", "twin"]
    labels = ["R@1", "R@5", "R@10", "direction R@1", "twin acc."]
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 4.2), squeeze=False)
    for ax, (title, rows) in zip(axes[0], tables):
        names = list(rows)
        width = 0.8 / max(1, len(names))
        x = np.arange(len(cols))
        for i, n in enumerate(names):
            means = [rows[n][c]["mean"] for c in cols]
            stds = [rows[n][c]["std"] for c in cols]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=n)
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def plot_query_grid(search: dict[str, Any], data: Any, path: Path) -> None:
    """One row per example query: the top-k clips, each as first / middle / last frame, green = exact caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipvip.video import read_frames

    queries = list(search["queries"].items())
    k = max((len(h) for _, h in queries), default=1)
    fig, axes = plt.subplots(len(queries), k, figsize=(2.1 * k, 1.35 * len(queries) + 0.3), squeeze=False)
    size = data.world.config.frame_size
    for r, (q, hits) in enumerate(queries):
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(hits):
                ax.axis("off")
                continue
            h = hits[c]
            frames = read_frames(h["path"], num_frames=3, size=size).frames  # first / middle / last
            strip = np.concatenate([f.permute(1, 2, 0).numpy() for f in frames], axis=1)
            ax.imshow(strip, interpolation="nearest")
            colour = "green" if h["correct"] else "black"
            title = textwrap.fill(f"{h['score']:.2f}: {h['caption']}", 34)  # long captions would overlap
            ax.set_title(title, fontsize=5.5, color=colour)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2 if h["correct"] else 0.5)
            if c == 0:
                ax.set_ylabel(q, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(
        "example queries: top results (first | middle | last frame); green = the clip the query describes", fontsize=8
    )
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def render_markdown(results: dict[str, Any]) -> str:
    cfg, summ, seeds = results["config"], results["summary"], results["seeds"]
    n = len(seeds)
    n2 = sum(1 for s in seeds if s["table2"])
    w = results["world"]
    spread = (
        f"Tables 3-4: mean ± sample std over {n} seeds; Table 2: {n2} seed(s)"
        if n > 1
        else "1 seed (no spread: use the full demo for 3 seeds)"
    )
    lines = [
        "# clipvip demo: CLIP-ViP in a synthetic video-language world",
        "",
        f"Mode: {'quick' if cfg['quick'] else 'full'}; {spread}. Every number below was measured by this run. "
        "Seeds vary model initialisation of the added parts and the data order; the world and the image-text "
        "CLIP stage (trained once, like a released CLIP) are shared.",
        "",
        "## The world",
        f"- {w['images']} still images with static captions (the image-text 'CLIP' stage), {w['pretrain']} "
        f"post-pretraining clips (ASR-like subtitle + auxiliary caption), {w['train']} fine-tuning clips, "
        f"{w['test']} test clips ({w['test'] // 2} time-reversal twin pairs, every caption distinct).",
        f"- Clips: {cfg['world']['num_frames']} frames of {cfg['world']['frame_size']} px, H.264 (lossless) files "
        "under `world/videos/`, decoded once with `clipvip.video.read_frames`.",
        f"- Auxiliary captions come from the **{w['captioner']}**, which sees the middle frame's appearance only, "
        "never motion. On real data the path is `clipvip caption`.",
        f"- Files that failed to decode: {len(w['failed_files'])}.",
        f"- Model: `clipvip.CLIPViP`, width {cfg['width']}, {cfg['vision_layers']} vision / {cfg['text_layers']} "
        f"text layers, patch 8, {results['model']['params'] / 1e6:.2f}M parameters (ViP; 3.2M of them are the "
        "CLIP-vocabulary token embedding).",
        f"- Recipe: {_stage_text('image-text stage', cfg['clip_stage'])}, mirrored pairs "
        f"{cfg['clip_mirror_fraction']:g}; {_stage_text('post-pretraining', cfg['pretrain'])}; "
        f"{_stage_text('fine-tuning', cfg['finetune'])}; {cfg['threads']} torch thread(s).",
        "",
        "Metrics: text-to-video recall (%) on the whole test set; *direction-query R@1* on the queries whose "
        "motion is left/right/up/down; *twin acc.* = share of queries whose own clip outscores its "
        "time-reversed twin (chance = 50; an order-blind model cannot beat it). Ties are ranked by their mean "
        'rank (`ties="mean"`).',
        "",
        "## Table 2: vision structure (CLIP fine-tuned on downstream captions)",
        "",
        markdown_table(summ["table2"], "Vision structure"),
        "",
        "Before fine-tuning (zero-shot from the image-text CLIP):",
        "",
        markdown_table(summ["table2"], "Vision structure", zero_shot=True),
        "",
        "## Tables 3-4: post-pretraining data and loss (ViP, then fine-tuned)",
        "",
        markdown_table(summ["table34"], "Post-pretraining"),
        "",
        "After post-pretraining, before fine-tuning (zero-shot):",
        "",
        markdown_table(summ["table34"], "Post-pretraining", zero_shot=True),
        "",
        "## What the numbers say",
        "",
    ]
    lines += [f"- {s}" for s in findings(summ, n)]
    lines += [f"- {s}" for s in probe_findings(results["clip_stage"])]
    lines += [
        "",
        "## Example queries",
        "",
        f"Index: `clipvip.index` over the test clips, model: {results['search']['model']}.",
        "",
        "![query grid](query_grid.png)",
        "",
    ]
    for q, hits in results["search"]["queries"].items():
        shown = "; ".join(f"{h['caption']} ({h['score']:.2f}){' ✓' if h['correct'] else ''}" for h in hits[:3])
        lines.append(f"- **{q}** → {shown}")
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](training_curves.png)",
        "",
        "![recall](recall_bars.png)",
        "",
        "## Timings (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in results["timings_s"].items()]
    return "\n".join(lines) + "\n"


def _stage_text(name: str, st: dict[str, Any]) -> str:
    """'fine-tuning 200 steps x 64, lr 0.004, new parameters 0.03, text tower fixed' from a StageConfig dict."""
    parts = [f"{name} {st['steps']} steps x {st['batch_size']}, lr {st['lr']:g}"]
    if st.get("new_param_lr") is not None:
        parts.append(f"new video parameters {st['new_param_lr']:g}")
    if st.get("freeze_text"):
        parts.append("text tower fixed")
    return ", ".join(parts)


def probe_findings(clip_stage: dict[str, Any]) -> list[str]:
    """The image-text stage's position-word probes (``pipeline.position_word_accuracy``) in words."""
    out = []
    for key, p in clip_stage.get("position_words", {}).items():
        a, b = key.split("_")
        out.append(
            f"The image-text CLIP stage tells '{a}' from '{b}' on its own still images in {p['accuracy']:.1f}% of "
            f"{p['n']} cases (own caption vs. the same caption with the two words swapped; chance = 50). Reading "
            "motion direction from frame order needs this spatial grounding first."
        )
    return out


def findings(summ: dict[str, Any], n: int) -> list[str]:
    """Plain-language statements derived from the measured numbers (never fixed text)."""
    out = []
    t2, t34, ch = summ["table2"], summ["table34"], summ["checks"]
    if "ViP (M=4)" in t2 and "MeanPool" in t2:
        v, m = t2["ViP (M=4)"], t2["MeanPool"]
        verdict = "beats" if ch.get("vip_beats_meanpool_on_direction") else "does NOT beat"
        out.append(
            f"ViP {verdict} MeanPool on motion direction: direction twin accuracy {_fmt(v['dirTwin'])} vs "
            f"{_fmt(m['dirTwin'])} (all motions: {_fmt(v['twin'])} vs {_fmt(m['twin'])}), "
            f"direction-query R@1 {_fmt(v['dirR@1'])} vs {_fmt(m['dirR@1'])} (MeanPool averages per-frame "
            "features, so a clip and its time reversal look identical to it)."
        )
    if "subtitles (L_VS)" in t34:
        s = t34["subtitles (L_VS)"]["Mean"]
        for other in ("captions (L_VC)", "OCL (d)", "none (CLIP-ViP)"):
            if other in t34:
                o = t34[other]["Mean"]
                diff = ch.get(f"{other} minus subtitles, Mean R@1/5/10")
                sign = ""
                if diff:
                    wins = sum(d > 0 for d in diff)
                    sign = f" ({other} higher in {wins} of {len(diff)} seeds)"
                out.append(
                    f"Mean R@1/5/10 after post-pretraining on {other}: {_fmt(o)} vs subtitles only {_fmt(s)}{sign}."
                )
    if n == 1:
        out.append("One seed only: differences of a few points are within seed noise here; run the full demo.")
    return out


def print_tables(results: dict[str, Any]) -> None:
    summ = results["summary"]
    print("\nTable 2 (vision structure, fine-tuned from the image-text CLIP):")
    print(markdown_table(summ["table2"], "Vision structure"))
    print("\nTables 3-4 (post-pretraining of ViP, then fine-tuned):")
    print(markdown_table(summ["table34"], "Post-pretraining"))
    print()
    for s in findings(summ, len(results["seeds"])):
        print("- " + s)
    for s in probe_findings(results["clip_stage"]):
        print("- " + s)


def write_report(results: dict[str, Any], out: Path, data: Any) -> None:
    plot_curves(results["seeds"], out / "training_curves.png", results["clip_stage"]["curve"])
    plot_recall(results["summary"], out / "recall_bars.png")
    plot_query_grid(results["search"], data, out / "query_grid.png")
    _atomic_text(out / "report.md", render_markdown(results))
