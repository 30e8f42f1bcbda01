"""Tables (printed + report.md), plots (training curves, R@K bars, claim intervals) and the example-query grid."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from clipvip.io import atomic_path, atomic_write_text
from clipvip_apps.demo.claims import claims_markdown, plot_claims, verdict

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
    """{table: {row: {col: {"mean", "std", "values"}}}} over seeds (std is the sample std; 0 for one seed); each
    row also carries "zero_shot" (with "label": classification accuracy) and "low_data" parts when measured."""
    out: dict[str, Any] = {}
    for table in ("table2", "table34"):
        rows: dict[str, Any] = {}
        for name in dict.fromkeys(n for s in seeds for n in s[table]):
            runs = [s[table][name] for s in seeds if name in s[table]]
            rows[name] = {c: _stat([_row_values(r)[c] for r in runs]) for c, _ in COLUMNS}
            for part in ("zero_shot", "low_data"):
                sub = [r[part] for r in runs if part in r]
                if sub:
                    rows[name][part] = {c: _stat([_row_values(r)[c] for r in sub]) for c, _ in COLUMNS}
            labels = [r["zero_shot"]["label_accuracy"] for r in runs if "label_accuracy" in r.get("zero_shot", {})]
            if labels:
                rows[name]["zero_shot"]["label"] = _stat(labels)
        out[table] = rows
    return out


def _stat(xs: list[float]) -> dict[str, Any]:
    a = np.asarray(xs, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def _fmt(stat: dict[str, Any]) -> str:
    if len(stat["values"]) > 1:
        return f"{stat['mean']:.1f} ± {stat['std']:.1f}"
    return f"{stat['mean']:.1f}"


def markdown_table(
    rows: dict[str, Any], first: str, part: str | None = None, columns: tuple[tuple[str, str], ...] = COLUMNS
) -> str:
    """Markdown table of ``rows`` (or of each row's ``part``: "zero_shot" / "low_data"), mean ± std per cell."""
    head = [first] + [label for _, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cols in rows.items():
        src = cols.get(part) if part else cols
        if src is None:
            continue
        lines.append("| " + " | ".join([name] + [_fmt(src[c]) if c in src else "—" for c, _ in columns]) + " |")
    return "\n".join(lines)


ZERO_SHOT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("R@1", "zero-shot R@1"),
    ("R@5", "R@5"),
    ("R@10", "R@10"),
    ("Mean", "Mean R@1/5/10"),
    ("label", "motion classification acc. (%)"),
)


def _atomic_savefig(fig: Any, path: Path) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


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
        ("Table 2 fine-tuning", [n for n in names if n.startswith("Table 2")]),
        ("fine-tuning", [n for n in names if n.startswith("fine-tune")]),
        ("low-data fine-tuning", [n for n in names if n.startswith("10%")]),
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
        else "1 seed (no spread and no intervals: use the full demo)"
    )
    split = "VALIDATION split (choosing settings)" if w.get("eval_split") == "val" else "test split"
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
        f"{w['test']} test clips ({w['test'] // 2} time-reversal twin pairs, every caption distinct), "
        f"{w.get('val', 0)} validation clips (the same kind; settings are chosen on them). Low-data fine-tuning "
        f"uses {w.get('train_low_data', '?')} of the {w['train']} training clips "
        f"({cfg['low_data_fraction']:.0%}), the same clips for every setting and seed.",
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
        f"{_stage_text('fine-tuning', cfg['finetune'])}; "
        f"{_stage_text('low-data fine-tuning', cfg['finetune_low'])}; "
        f"{_stage_text('Table 2 fine-tuning', cfg['table2_finetune'])}; {cfg['threads']} torch thread(s) in each of "
        f"{cfg['workers']} process(es).",
        "",
        f"Evaluated on the **{split}**. "
        "Metrics: text-to-video recall (%) on the whole evaluation set; *direction-query R@1* on the queries whose "
        "motion is left/right/up/down; *twin acc.* = share of queries whose own clip outscores its "
        "time-reversed twin (chance = 50; an order-blind model cannot beat it). Ties are ranked by their mean "
        'rank (`ties="mean"`).',
        "",
        "## Claims (fixed in the config before the run; paired by seed)",
        "",
        f"Each claim: mean of the per-seed differences A − B with a {cfg['confidence']:.0%} paired t interval; "
        "it holds when the interval excludes 0 (above it). Every claim is listed, held or not.",
        "",
        claims_markdown(results["claims"]),
        "",
        "![claims](claims.png)",
        "",
        "## Table 2: vision structure (CLIP fine-tuned on downstream captions)",
        "",
        markdown_table(summ["table2"], "Vision structure"),
        "",
        "Before fine-tuning (zero-shot from the image-text CLIP):",
        "",
        markdown_table(summ["table2"], "Vision structure", "zero_shot"),
        "",
        "## Tables 3-4: post-pretraining data and loss (ViP, then fine-tuned)",
        "",
        markdown_table(summ["table34"], "Post-pretraining"),
        "",
        f"Low-data regime: the same starting models fine-tuned on {cfg['low_data_fraction']:.0%} of the training "
        "clips:",
        "",
        markdown_table(summ["table34"], "Post-pretraining", "low_data"),
        "",
        "## Table 7 analogue: zero-shot after post-pretraining (no fine-tuning)",
        "",
        "Retrieval, and classification of each clip's motion among the test motions by label prompts (the "
        "canonical caption of each motion over every shape and colour, averaged; chance = "
        f"{100 / len(cfg['world']['test_motions']):.1f}%).",
        "",
        markdown_table(summ["table34"], "Post-pretraining", "zero_shot", ZERO_SHOT_COLUMNS),
        "",
        "## Sec. 3.2: language domain gap (NMI, the image-text CLIP's text features)",
        "",
        "K-means (2) over the text features of two sources; NMI of clusters vs source (1 = fully separable). The "
        "paper finds subtitles farther from downstream captions than auxiliary captions are.",
        "",
        "| sources | NMI (mean ± std) | texts per source × trials |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['nmi_mean']:.3f} ± {v['nmi_std']:.3f} | {v['n_per_source']} × {v['repeats']} |"
        for k, v in results.get("domain_gap_nmi", {}).items()
    ]
    lines += [
        "",
        "## What the numbers say",
        "",
    ]
    lines += [f"- {s}" for s in findings(results["claims"], n)]
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
        f"Machine: {results['machine']['cpus']} CPUs, load average (1/5/15 min) "
        f"{' / '.join(f'{x:.1f}' for x in results['machine']['loadavg_start'])} at the start and "
        f"{' / '.join(f'{x:.1f}' for x in results['machine']['loadavg_end'])} at the end. *cpu_total* is this "
        "process's CPU time (user + system), which a busy machine does not inflate.",
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
    """The image-text stage's position-word probes (``evaluation.position_word_accuracy``) in words."""
    out = []
    for key, p in clip_stage.get("position_words", {}).items():
        a, b = key.split("_")
        out.append(
            f"The image-text CLIP stage tells '{a}' from '{b}' on its own still images in {p['accuracy']:.1f}% of "
            f"{p['n']} cases (own caption vs. the same caption with the two words swapped; chance = 50). Reading "
            "motion direction from frame order needs this spatial grounding first."
        )
    return out


def findings(claims: list[dict[str, Any]], n: int) -> list[str]:
    """Each claim in words, from the measured numbers (never fixed text)."""
    out = []
    for e in claims:
        if e["mean_difference"] is None:
            out.append(f"{e['name']}: not measured in this run.")
            continue
        iv = f", 95% interval [{e['interval'][0]:+.1f}, {e['interval'][1]:+.1f}]" if e["interval"] else ""
        out.append(
            f"{e['name']} ({e['paper']}): {verdict(e)}. {e['a']} {e['mean_a']:.1f} vs {e['b']} {e['mean_b']:.1f} "
            f"({e['metric_text']}); paired difference {e['mean_difference']:+.1f}{iv}, n = {e['n']}."
        )
    if n == 1:
        out.append("One seed only: no interval can be computed; run the full demo.")
    return out


def print_tables(results: dict[str, Any]) -> None:
    summ = results["summary"]
    print("\nTable 2 (vision structure, fine-tuned from the image-text CLIP):")
    print(markdown_table(summ["table2"], "Vision structure"))
    print("\nTables 3-4 (post-pretraining of ViP, then fine-tuned):")
    print(markdown_table(summ["table34"], "Post-pretraining"))
    print("\nTables 3-4, low-data fine-tuning:")
    print(markdown_table(summ["table34"], "Post-pretraining", "low_data"))
    print("\nTable 7 analogue (zero-shot after post-pretraining):")
    print(markdown_table(summ["table34"], "Post-pretraining", "zero_shot", ZERO_SHOT_COLUMNS))
    print("\nClaims (paired by seed):")
    print(claims_markdown(results["claims"]))
    print()
    for s in findings(results["claims"], len(results["seeds"])):
        print("- " + s)
    for s in probe_findings(results["clip_stage"]):
        print("- " + s)


def write_report(results: dict[str, Any], out: Path, data: Any) -> None:
    plot_curves(results["seeds"], out / "training_curves.png", results["clip_stage"]["curve"])
    plot_recall(results["summary"], out / "recall_bars.png")
    plot_claims(results["claims"], out / "claims.png")
    plot_query_grid(results["search"], data, out / "query_grid.png")
    atomic_write_text(out / "report.md", render_markdown(results))
