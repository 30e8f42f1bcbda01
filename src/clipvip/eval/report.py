"""Evaluation reports: results.json, a Markdown table (both directions, with and without post-processing) and
recall curves (R@K for K = 1..50) as PNG. All writes are atomic (temp file + ``os.replace``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clipvip.eval.metrics import METRIC_KEYS, recall_curve
from clipvip.eval.paper import comparison_lines
from clipvip.io import atomic_path, atomic_write_text

ROW_NAMES = {
    "t2v": "text -> video",
    "v2t": "video -> text",
    "t2v_dsl": "text -> video (DSL)",
    "v2t_dsl": "video -> text (DSL)",
    "t2v_qbnorm": "text -> video (QB-Norm)",
}


def _atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "ranks"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write a result dict (per-query "ranks" are left out) as pretty JSON."""
    return _atomic_write_text(Path(path), json.dumps(_jsonable(result), indent=2) + "\n")


def markdown_table(result: Mapping[str, Any], title: str | None = None) -> str:
    """One row per direction / post-processing present in ``result`` (keys of ``ROW_NAMES``)."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| direction | " + " | ".join(METRIC_KEYS) + " |")
    lines.append("| --- |" + " ---: |" * len(METRIC_KEYS))
    for key, name in ROW_NAMES.items():
        m = result.get(key)
        if not isinstance(m, Mapping):
            continue
        cells = [f"{m[k]:.1f}" for k in METRIC_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = result.get("counts")
    if isinstance(counts, Mapping):
        lines.append("")
        lines.append(coverage_line(counts) + f"; ties: {result.get('ties', 'optimistic')}.")
        skipped = counts.get("skipped_files") or []
        if skipped:
            lines.append(
                "Unreadable: " + ", ".join(str(p) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
            )
    if "t2v_dsl" in result:
        lines.append("DSL rows use the statistics of all test queries (dual softmax over the test set).")
    paper = comparison_lines(result.get("paper") or [])
    if paper:
        lines.append("")
        lines.extend(f"- {line}" for line in paper)
    return "\n".join(lines) + "\n"


def coverage_line(counts: Mapping[str, Any]) -> str:
    """ "Evaluated 998 videos and 998 texts; missing 2 videos (1 without a file, 1 unreadable) and their 2 texts"."""
    videos = counts.get("evaluated_videos", counts.get("videos"))
    texts = counts.get("evaluated_texts", counts.get("texts"))
    line = f"Evaluated {videos} videos and {texts} texts"
    no_file, bad = counts.get("missing_files", 0), counts.get("skipped_videos", 0)
    if no_file or bad:
        line += (
            f"; missing {no_file + bad} videos ({no_file} without a file, {bad} unreadable) "
            f"and their {counts.get('missing_texts', counts.get('dropped_texts', 0))} texts"
        )
    return line


def write_markdown(result: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    return _atomic_write_text(Path(path), markdown_table(result, title))


def plot_recall_curves(
    ranks: Mapping[str, np.ndarray], path: str | Path, max_k: int = 50, title: str | None = None
) -> Path:
    """R@K for K = 1..max_k, one line per direction / post-processing, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = np.arange(1, max_k + 1)
    for key, r in ranks.items():
        ax.plot(ks, recall_curve(r, max_k), label=ROW_NAMES.get(key, key))
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
