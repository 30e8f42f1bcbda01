"""Exact answers over an embedding folder, and tuning an on-disk index against them.

``exact_search_folder`` streams the folder (never all in RAM) for the ground truth; ``rerank`` re-scores PQ
candidates exactly from the fp16 rows; ``tune_nprobe`` picks the cheapest lists-scanned / re-rank-depth pair that
reaches the target recall. Kept apart from the build (``clipvip.index.ondisk``), which calls it once its lists are
merged, and from ``clipvip index --retune``, which calls it alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from clipvip.embedjob.layout import EmbeddingFolder
from clipvip.index.ann import exact_topk_blocks, recall_at_k
from clipvip.index.budget import OnDiskConfig, nprobe_ceiling

log = logging.getLogger(__name__)


def exact_search_folder(folder: EmbeddingFolder, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top-k by inner product over the whole folder, streamed block by block."""
    return exact_topk_blocks(folder.iter_blocks(65_536), queries, k)[1]


def rerank(folder: EmbeddingFolder, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate ``ids`` (fp16 rows, memory-mapped), best first."""
    ids = ids[ids >= 0]
    if not len(ids):
        return np.zeros(0, np.float32), ids
    s = folder.read_rows(ids) @ query
    order = np.argsort(-s, kind="stable")
    return s[order], ids[order]


def tune_nprobe(index: Any, folder: EmbeddingFolder, cfg: OnDiskConfig) -> tuple[int, int, float]:
    """(nprobe, re-rank depth, recall): the smallest nprobe (up to ``nprobe_ceiling``) at which some re-rank depth of
    ``cfg.rerank`` reaches ``cfg.target_recall``, with the smallest such depth. One PQ search per nprobe at the
    deepest depth serves every depth (a shallower depth's candidates are its prefix). If no setting reaches the
    target, the best recall is kept (the cheapest setting within 0.005 of it) and a warning says so: then the true
    neighbours lie outside the lists a search may scan, and only more lists per search, or a finer coarse
    quantizer, raise it. Queries are sampled rows moved off themselves by the distance to their k-th neighbour (as
    ``clipvip.index.ann.tune`` does; a stored row is an unrealistically easy query)."""
    import faiss

    rng = np.random.default_rng(cfg.seed + 1)
    n = len(folder)
    k = min(10, n)
    ids = np.sort(rng.choice(n, min(cfg.tune_queries, n), replace=False))
    rows = folder.vectors(ids)
    kth = folder.vectors(exact_search_folder(folder, rows, k + 1)[:, -1])
    step = rng.standard_normal(rows.shape).astype(np.float32)
    step *= np.linalg.norm(rows - kth, axis=1, keepdims=True) / np.linalg.norm(step, axis=1, keepdims=True)
    queries = rows + step
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_search_folder(folder, queries, k)
    ivf = faiss.extract_index_ivf(index)
    nlist = int(ivf.nlist)
    ceiling = nprobe_ceiling(nlist, cfg)
    probes = [p for p in PROBES if p <= min(nlist, ceiling)] or [1]
    depths = sorted(max(d, k) for d in cfg.rerank)
    tried: list[tuple[float, int, int]] = []
    for nprobe in probes:
        ivf.nprobe = nprobe
        _, cand = index.search(queries, depths[-1])
        # each query's candidates are read and scored once; a shallower depth re-ranks a prefix of them (FAISS pads
        # a short result with -1 at the end only, so the valid prefix of c[:depth] is valid[:depth])
        valid = [c[c >= 0] for c in cand]
        scores = [folder.read_rows(v) @ q for q, v in zip(queries, valid, strict=True)]
        for depth in depths:
            found = [_pad(_best(s[:depth], v[:depth], k), k) for s, v in zip(scores, valid, strict=True)]
            recall = recall_at_k(np.stack(found), truth)
            if recall >= cfg.target_recall:
                return nprobe, depth, recall
            tried.append((recall, nprobe, depth))
    top = max(r for r, _, _ in tried)
    recall, nprobe, depth = min((t for t in tried if t[0] >= top - 0.005), key=lambda t: (t[1], t[2]))
    log.warning(
        "recall@10 after re-rank reached %.3f, below the %.2f target, at nprobe %d of %d lists (the ceiling %d): "
        "the true neighbours lie in more lists than a search may scan; raise OnDiskConfig.max_nprobe (slower "
        "searches) or build with more lists",
        recall,
        cfg.target_recall,
        nprobe,
        nlist,
        ceiling,
    )
    return nprobe, depth, recall


PROBES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best ``ids`` by exact score, in ``rerank``'s order (stable, best first)."""
    return ids[np.argsort(-scores, kind="stable")][:k]


def _pad(ids: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([ids, np.full(k - len(ids), -1, np.int64)]) if len(ids) < k else ids
