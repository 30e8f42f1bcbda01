"""Language domain-gap analysis (paper Sec. 3.2, Table 1).

Text features of two sources (e.g. subtitles vs. downstream captions) are mixed, clustered by K-means into two
clusters, and the normalised mutual information (NMI) between cluster ids and source ids is measured: near 1 means
the sources separate cleanly (a large domain gap), near 0 means they are indistinguishable. As in the paper, each
trial samples ``n_per_source`` (1000) texts per source, and the mean and standard deviation over ``repeats`` (10)
trials are reported. K-means and NMI are scikit-learn's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from clipvip.io import atomic_path

log = logging.getLogger(__name__)

FeatureFn = Callable[[Sequence[str]], np.ndarray | Tensor]


@dataclass
class NMIResult:
    mean: float
    std: float
    scores: list[float]
    n_per_source: int
    repeats: int
    sizes: tuple[int, int]
    # features + source ids of the first trial, for the optional 2-D plot (not serialised)
    sample_features: np.ndarray | None = field(default=None, repr=False)
    sample_sources: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "nmi_mean": self.mean,
            "nmi_std": self.std,
            "scores": self.scores,
            "n_per_source": self.n_per_source,
            "repeats": self.repeats,
            "source_sizes": list(self.sizes),
        }


def read_texts(path: str | Path) -> list[str]:
    """One text per line; blank lines ignored."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: text file not found")
    texts = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not texts:
        raise ValueError(f"{p}: no texts (one per line expected)")
    return texts


def model_feature_fn(
    model: nn.Module, batch_size: int = 256, context_length: int | None = None, progress: bool = True
) -> FeatureFn:
    """Text features from the model's (CLIP) text tower, L2-normalised."""
    from clipvip.eval.embed import embed_texts

    def fn(texts: Sequence[str]) -> Tensor:
        return embed_texts(model, list(texts), batch_size, context_length, progress=progress)

    return fn


def domain_gap_nmi(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    feature_fn: FeatureFn,
    n_per_source: int = 1000,
    repeats: int = 10,
    seed: int = 0,
) -> NMIResult:
    """NMI between K-means(2) clusters and source ids over ``repeats`` random samples of ``n_per_source`` texts per
    source (all texts when a source is smaller, with a warning). Each distinct sampled text is embedded once."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    from threadpoolctl import threadpool_limits

    if not texts_a or not texts_b:
        raise ValueError("both sources need at least one text")
    if repeats < 1 or n_per_source < 2:
        raise ValueError("need repeats >= 1 and n_per_source >= 2")
    n = min(n_per_source, len(texts_a), len(texts_b))
    if n < n_per_source:
        log.warning("a source has fewer than %d texts: sampling %d per source", n_per_source, n)
    rng = np.random.default_rng(seed)
    samples = [
        (rng.choice(len(texts_a), n, replace=False), rng.choice(len(texts_b), n, replace=False)) for _ in range(repeats)
    ]
    used_a = np.unique(np.concatenate([a for a, _ in samples]))
    used_b = np.unique(np.concatenate([b for _, b in samples]))
    feats = np.asarray(
        torch.as_tensor(feature_fn([texts_a[i] for i in used_a] + [texts_b[i] for i in used_b])).float().cpu()
    )
    if feats.shape[0] != len(used_a) + len(used_b):
        raise ValueError(f"feature_fn returned {feats.shape[0]} rows for {len(used_a) + len(used_b)} texts")
    pos_a = {int(t): r for r, t in enumerate(used_a)}
    pos_b = {int(t): len(used_a) + r for r, t in enumerate(used_b)}
    sources = np.repeat([0, 1], n)
    scores: list[float] = []
    first_x = None
    for r, (a, b) in enumerate(samples):
        x = feats[[pos_a[int(i)] for i in a] + [pos_b[int(i)] for i in b]]
        # 2 clusters of ~2000 points: one thread is fastest; OpenMP threads on a busy machine cost seconds per fit
        with threadpool_limits(limits=1):
            clusters = KMeans(n_clusters=2, n_init=10, random_state=seed + r).fit_predict(x)
        scores.append(float(normalized_mutual_info_score(sources, clusters)))
        if first_x is None:
            first_x = x
    return NMIResult(
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
        scores=scores,
        n_per_source=n,
        repeats=repeats,
        sizes=(len(texts_a), len(texts_b)),
        sample_features=first_x,
        sample_sources=sources,
    )


def plot_projection(result: NMIResult, path: str | Path, names: tuple[str, str] = ("A", "B")) -> Path:
    """2-D PCA of the first trial's features, coloured by source, as a PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    if result.sample_features is None or result.sample_sources is None:
        raise ValueError("result carries no sample features to plot")
    xy = PCA(n_components=2).fit_transform(result.sample_features)
    fig, ax = plt.subplots(figsize=(5, 5))
    for s, name in enumerate(names):
        m = result.sample_sources == s
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.5, label=name)
    ax.set_title(f"NMI {result.mean:.3f} ± {result.std:.3f}")
    ax.legend()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
