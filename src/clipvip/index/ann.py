"""Nearest-neighbour search over L2-normalised embeddings: exact for small collections, FAISS ANN for large ones.

Embeddings are unit vectors, so inner product = cosine similarity; every index here uses METRIC_INNER_PRODUCT.
Which structure is used depends only on the collection size (``choose_kind``): below ``exact_max`` a brute-force
matrix product is both exact and fast enough; up to ``hnsw_max`` an HNSW graph (cheap to build at that size, very
low latency); above it an IVF index, whose build cost (k-means on a sample + one assignment pass) stays reasonable
at millions of vectors on a CPU, where building an HNSW graph takes much longer. The search-time knob (``nprobe``
for IVF, ``efSearch`` for HNSW) is tuned after building to the smallest value that reaches ``target_recall``
recall@k against exact search on queries sampled from the collection itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from clipvip.io import atomic_path

log = logging.getLogger(__name__)

AnnKind = Literal["exact", "hnsw", "ivf"]


@dataclass
class AnnConfig:
    """When to switch from exact search to an ANN structure, and how to build it."""

    exact_max: int = 20_000  # at or below: exact search (no FAISS index on disk)
    hnsw_max: int = 2_000_000  # up to this: HNSW; above: IVF (HNSW build time and memory grow too fast)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    ivf_nlist: int | None = None  # default: ~sqrt(N), a power of two in [64, 4096]
    ivf_train_per_list: int = 64  # k-means training sample = nlist * this (FAISS recommends 39..256)
    target_recall: float = 0.97  # recall@tune_k the knob is tuned to (margin: tuning queries are a proxy)
    tune_k: int = 10
    tune_queries: int = 200
    seed: int = 0


def choose_kind(n: int, cfg: AnnConfig | None = None) -> AnnKind:
    """Exact / HNSW / IVF by collection size (see the module docstring for why)."""
    cfg = cfg or AnnConfig()
    if n <= cfg.exact_max:
        return "exact"
    return "hnsw" if n <= cfg.hnsw_max else "ivf"


def default_nlist(n: int) -> int:
    """~sqrt(N) inverted lists, rounded to a power of two and clipped to [64, 4096]."""
    return int(min(4096, max(64, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))


def exact_topk(emb: np.ndarray, queries: np.ndarray, k: int, block: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product: (scores [Q, k], ids [Q, k]), best first. Blocks over the collection so
    the [Q, N] score matrix never has to exist at once for large N."""
    return exact_topk_blocks(((lo, emb[lo : lo + block]) for lo in range(0, emb.shape[0], block)), queries, k)


def exact_topk_blocks(
    blocks: Iterable[tuple[int, np.ndarray]], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_topk`` over (first id, rows) blocks, e.g. an embedding folder streamed part by part."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    best_s = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for lo, rows in blocks:
        s = queries @ np.asarray(rows, dtype=np.float32).T
        kk = min(k, s.shape[1])
        if kk <= 0:
            continue
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + lo], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (ids; -1 padding in ``found`` never matches)."""
    k = truth.shape[1]
    hits = sum(len((set(f.tolist()) - {-1}) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


class AnnIndex:
    """A FAISS index plus its tuned search knob. ``search`` returns (scores [Q, k], ids [Q, k]), -1 for empty."""

    def __init__(self, index, kind: AnnKind, knob: int) -> None:  # noqa: ANN001 - faiss.Index has no stub
        self.index = index
        self.kind = kind
        self.knob = knob
        self.set_knob(knob)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def set_knob(self, value: int) -> None:
        """IVF: nprobe (lists scanned per query); HNSW: efSearch (candidate list size)."""
        import faiss

        self.knob = int(value)
        if self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = self.knob
        else:
            self.index.hnsw.efSearch = self.knob

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(k, self.ntotal))

    def save(self, path: str | Path) -> None:
        """Atomic: temp file + rename (the knob is stored by the caller, e.g. in index.json)."""
        import faiss

        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def load(cls, path: str | Path, kind: AnnKind, knob: int) -> AnnIndex:
        import faiss

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: ANN index file missing")
        return cls(faiss.read_index(str(path)), kind, knob)


def build_ann(
    emb: np.ndarray, kind: AnnKind | Literal["auto"] = "auto", cfg: AnnConfig | None = None
) -> AnnIndex | None:
    """Build (and tune) an ANN index over ``emb`` [N, E] (L2-normalised fp32). Returns None when ``kind`` resolves
    to exact search."""
    cfg = cfg or AnnConfig()
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = emb.shape
    kind = choose_kind(n, cfg) if kind == "auto" else kind
    if kind == "exact":
        return None
    import faiss

    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.add(emb)
        ann = AnnIndex(index, "hnsw", 16)
        candidates = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    elif kind == "ivf":
        nlist = cfg.ivf_nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = cfg.ivf_train_per_list
        rng = np.random.default_rng(cfg.seed)
        n_train = min(n, nlist * cfg.ivf_train_per_list)
        sample = emb[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else emb
        index.train(sample)
        index.add(emb)
        ann = AnnIndex(index, "ivf", 1)
        candidates = [p for p in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024) if p <= nlist]
    else:
        raise ValueError(f"unknown ANN kind {kind!r}; expected auto, exact, hnsw or ivf")
    knob, recall = tune(ann, emb, candidates, cfg)
    log.info("built %s index over %d x %d: knob=%d reaches recall@%d=%.3f", kind, n, d, knob, cfg.tune_k, recall)
    return ann


def tune(ann: AnnIndex, emb: np.ndarray, candidates: list[int], cfg: AnnConfig) -> tuple[int, float]:
    """Smallest knob in ``candidates`` whose recall@k against exact search reaches ``cfg.target_recall``.

    Queries are rows sampled from the collection, each moved off its row by a random step as long as the distance
    to its k-th neighbour: a stored row itself is a node of the HNSW graph / sits inside its IVF list, which makes
    it an unrealistically easy query (measured: tuning on raw rows under-estimates the knob). Falls back to the
    largest candidate if none reaches the target."""
    rng = np.random.default_rng(cfg.seed + 1)
    n = emb.shape[0]
    k = min(cfg.tune_k, n)
    rows = emb[rng.choice(n, min(cfg.tune_queries, n), replace=False)]
    _, nn = exact_topk(emb, rows, k + 1)
    radius = np.linalg.norm(rows - emb[nn[:, -1]], axis=1, keepdims=True)
    step = rng.standard_normal(rows.shape).astype(np.float32)
    step *= radius / np.linalg.norm(step, axis=1, keepdims=True)
    queries = rows + step
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, truth = exact_topk(emb, queries, k)
    recall = 0.0
    for knob in candidates:
        ann.set_knob(knob)
        _, found = ann.search(queries, k)
        recall = recall_at_k(found, truth)
        if recall >= cfg.target_recall:
            return knob, recall
    return ann.knob, recall
