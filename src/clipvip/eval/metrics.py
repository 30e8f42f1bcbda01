"""Retrieval ranks and R@K / MdR / MnR from a similarity matrix, exact at any size.

Conventions (rows are queries, columns are gallery items):

* a query's rank is the 1-based position of its correct item (or, when a query has several correct items, e.g.
  video->text with 20 captions per video, of its best-ranked correct item) in the row sorted by descending score;
* ties between the correct item and wrong items are resolved by ``ties``:

  - ``"optimistic"`` (default): rank = 1 + number of items scoring strictly higher;
  - ``"pessimistic"``: every tied wrong item is placed before the correct one(s);
  - ``"mean"``: the expected rank under a random order of the tied items. With ``g`` tied wrong items and ``c``
    tied correct items that is ``1 + higher + g / (c + 1)`` (for one correct item: the mean of the two above).

  Every query counts exactly once. The release's ``compute_metrics`` (sort, then ``np.where(sorted == target)``)
  instead emits one entry per tied position, so a tied query is counted several times and the denominator grows.

* Work is chunked over queries: per chunk only a boolean [chunk, N] buffer is allocated, so a 20,000 x 20,000
  matrix is ranked in well under a second with a few MB beyond the matrix (see ``benchmarks/bench_metrics.py``).
  ``retrieval_ranks_from_embeddings`` never builds the matrix at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Ties = Literal["optimistic", "pessimistic", "mean"]
TIES: tuple[str, ...] = ("optimistic", "pessimistic", "mean")
METRIC_KEYS: tuple[str, ...] = ("R@1", "R@5", "R@10", "MdR", "MnR")
ArrayLike = np.ndarray | Tensor

_CHUNK_ELEMS = 1 << 22  # ~4M scores per chunk: a 4 MB bool buffer, fast and cache friendly


class Positives:
    """Correct columns per query row in CSR form (``indices[indptr[q]:indptr[q+1]]`` belong to row ``q``).

    One representation for both the single-positive case (text->video) and the multi-positive one (video->text).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_items: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        counts = np.diff(self.indptr)
        if (counts < 1).any():
            q = int(np.flatnonzero(counts < 1)[0])
            raise ValueError(f"query {q} has no correct item; every query needs at least one")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= num_items):
            bad = int(self.indices[(self.indices < 0) | (self.indices >= num_items)][0])
            raise ValueError(f"correct item index {bad} is outside the {num_items} gallery columns")

    @property
    def num_queries(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def single(cls, query_to_item: Sequence[int] | np.ndarray | Tensor, num_items: int) -> Positives:
        q2i = _as_index_array(query_to_item)
        return cls(np.arange(len(q2i) + 1), q2i, num_items)

    @classmethod
    def multi(cls, positives: Sequence[Sequence[int]], num_items: int) -> Positives:
        lengths = [len(p) for p in positives]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = [int(i) for p in positives for i in p]
        return cls(indptr, np.asarray(flat, dtype=np.int64), num_items)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local row id per positive, column per positive, group starts) for query rows [start, stop)."""
        a, b = self.indptr[start], self.indptr[stop]
        counts = np.diff(self.indptr[start : stop + 1])
        local = np.repeat(np.arange(stop - start), counts)
        return local, self.indices[a:b], self.indptr[start:stop] - a


def _as_index_array(x: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"query_to_item must be a 1-D integer sequence, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def _chunk_to_numpy(chunk: ArrayLike) -> np.ndarray:
    """A float32/float64 numpy view (or small copy) of one row chunk, whatever the input type or device."""
    if isinstance(chunk, Tensor):
        chunk = chunk.detach()
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.float()  # fp16/bf16 -> fp32 is exact, so ties are preserved
        return chunk.cpu().numpy()
    if chunk.dtype not in (np.float32, np.float64):
        chunk = chunk.astype(np.float32)
    return chunk


_U16_MAX = 65535


def _count_rows(b: np.ndarray) -> np.ndarray:
    """Number of True per row (int64). Sums uint8 views into uint16 over <= 65535-column slabs: ~2x faster than
    summing into int64 and exact (a slab cannot overflow)."""
    out = np.zeros(b.shape[0], dtype=np.int64)
    u8 = b.view(np.uint8)
    for a in range(0, b.shape[1], _U16_MAX):
        out += u8[:, a : a + _U16_MAX].sum(axis=1, dtype=np.uint16)
    return out


def _count_cols(b: np.ndarray) -> np.ndarray:
    """Number of True per column (int64), same trick as ``_count_rows`` over row slabs."""
    out = np.zeros(b.shape[1], dtype=np.int64)
    u8 = b.view(np.uint8)
    for a in range(0, b.shape[0], _U16_MAX):
        out += u8[a : a + _U16_MAX].sum(axis=0, dtype=np.uint16)
    return out


def _best_correct(pos_scores: np.ndarray, local: np.ndarray, starts: np.ndarray, first_query: int) -> tuple:
    """(best correct score per query, number of correct items tied with it (>= 1))."""
    best = np.maximum.reduceat(pos_scores, starts)
    if np.isnan(best).any():
        q = first_query + int(np.flatnonzero(np.isnan(best))[0])
        raise ValueError(f"similarity of query {q} to its correct item is NaN")
    tied_correct = np.add.reduceat((pos_scores == best[local]).astype(np.int64), starts)
    return best, tied_correct


def _combine(higher: np.ndarray, at_least: np.ndarray | None, tied_correct: np.ndarray, ties: str) -> np.ndarray:
    """Ranks from counts: ``higher`` items strictly above the best correct one (nothing correct can be above it),
    ``at_least`` items at or above it (None for optimistic)."""
    if ties == "optimistic" or at_least is None:
        return 1.0 + higher
    tied_wrong = at_least - higher - tied_correct
    if ties == "pessimistic":
        return 1.0 + higher + tied_wrong
    return 1.0 + higher + tied_wrong / (tied_correct + 1.0)


def _rank_chunk(scores: np.ndarray, pos: Positives, start: int, ties: str, buf: np.ndarray) -> np.ndarray:
    """1-based ranks (float64) of the best correct item for query rows [start, start + len(scores))."""
    n = scores.shape[0]
    local, cols, starts = pos.rows(start, start + n)
    pos_scores = scores[local, cols]
    best, tied_correct = _best_correct(pos_scores, local, starts, start)
    b = buf[:n]
    np.greater(scores, best[:, None], out=b)
    higher = _count_rows(b)
    at_least = None
    if ties != "optimistic":
        np.greater_equal(scores, best[:, None], out=b)
        at_least = _count_rows(b)
    return _combine(higher, at_least, tied_correct, ties)


def _ranks_item_major(base: ArrayLike, pos: Positives, ties: str, rows: int | None) -> np.ndarray:
    """Ranks for the matrix ``base.T`` where ``base`` is items x queries and row-contiguous (e.g. video->text as
    the transpose of a texts x videos matrix): stream over item rows and accumulate per-query counts, so memory
    is read in order instead of column by column."""
    n, q = int(base.shape[0]), int(base.shape[1])
    local, cols, starts = pos.rows(0, q)
    if isinstance(base, Tensor):
        pos_scores = _chunk_to_numpy(
            base[torch.as_tensor(cols, device=base.device), torch.as_tensor(local, device=base.device)]
        )
    else:
        pos_scores = _chunk_to_numpy(base[cols, local])
    best, tied_correct = _best_correct(pos_scores, local, starts, 0)
    step = rows or max(1, _CHUNK_ELEMS // q)
    buf = np.empty((min(step, n), q), dtype=bool)
    higher = np.zeros(q, dtype=np.int64)
    at_least = None if ties == "optimistic" else np.zeros(q, dtype=np.int64)
    for a in range(0, n, step):
        chunk = _chunk_to_numpy(base[a : a + step])
        b = buf[: chunk.shape[0]]
        np.greater(chunk, best[None, :], out=b)
        higher += _count_cols(b)
        if at_least is not None:
            np.greater_equal(chunk, best[None, :], out=b)
            at_least += _count_cols(b)
    return _combine(higher, at_least, tied_correct, ties)


def _is_transposed_view(sim: ArrayLike) -> bool:
    """True when ``sim`` is the transpose of a row-contiguous matrix (reading its rows would be strided)."""
    if isinstance(sim, Tensor):
        return not sim.is_contiguous() and sim.T.is_contiguous()
    return not sim.flags.c_contiguous and sim.T.flags.c_contiguous


def _check_matrix(sim: ArrayLike) -> tuple[int, int]:
    if sim.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (queries x items), got shape {tuple(sim.shape)}")
    q, n = int(sim.shape[0]), int(sim.shape[1])
    if q == 0 or n == 0:
        raise ValueError(f"similarity matrix is empty: shape {(q, n)}")
    return q, n


def _positives_for(
    q: int,
    n: int,
    query_to_item: Sequence[int] | np.ndarray | Tensor | None,
    positives: Sequence[Sequence[int]] | Positives | None,
) -> Positives:
    if query_to_item is not None and positives is not None:
        raise ValueError("give either query_to_item (one correct item per query) or positives, not both")
    if positives is not None:
        pos = positives if isinstance(positives, Positives) else Positives.multi(positives, n)
    elif query_to_item is not None:
        pos = Positives.single(query_to_item, n)
    else:
        if q != n:
            raise ValueError(f"a {q} x {n} matrix has no diagonal ground truth; pass query_to_item")
        pos = Positives.single(np.arange(q), n)
    if pos.num_queries != q:
        raise ValueError(f"ground truth covers {pos.num_queries} queries but the matrix has {q} rows")
    return pos


def retrieval_ranks(
    sim: ArrayLike,
    query_to_item: Sequence[int] | np.ndarray | Tensor | None = None,
    *,
    positives: Sequence[Sequence[int]] | Positives | None = None,
    ties: Ties = "optimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each query's (best) correct item, float64 [Q]; see the module docstring for ``ties``.

    ``query_to_item[q]`` is row q's correct column (default: the diagonal); ``positives[q]`` lists several correct
    columns instead (the best-ranked one counts). ``sim`` may be a numpy array or a tensor on any device.
    """
    _check_ties(ties)
    q, n = _check_matrix(sim)
    pos = _positives_for(q, n, query_to_item, positives)
    if _is_transposed_view(sim):
        return _ranks_item_major(sim.T, pos, ties, chunk_size)
    rows = chunk_size or max(1, _CHUNK_ELEMS // n)
    buf = np.empty((min(rows, q), n), dtype=bool)
    out = np.empty(q, dtype=np.float64)
    for s in range(0, q, rows):
        e = min(q, s + rows)
        out[s:e] = _rank_chunk(_chunk_to_numpy(sim[s:e]), pos, s, ties, buf)
    return out


def metrics_from_ranks(ranks: np.ndarray | Sequence[float]) -> dict[str, float]:
    """R@1/5/10 in percent of queries, median and mean rank (1-based) from per-query ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in (1, 5, 10)}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    return out


def recall_curve(ranks: np.ndarray | Sequence[float], max_k: int = 50) -> np.ndarray:
    """R@K in percent for K = 1..max_k (index K-1), for recall-curve plots."""
    r = np.asarray(ranks, dtype=np.float64)
    ks = np.arange(1, max_k + 1)
    return 100.0 * (r[None, :] <= ks[:, None]).mean(axis=1)


def retrieval_metrics(
    sim: ArrayLike,
    query_to_item: Sequence[int] | np.ndarray | Tensor | None = None,
    ties: Ties = "optimistic",
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """{"R@1", "R@5", "R@10" (percent), "MdR", "MnR" (1-based)} for a queries x items matrix.

    ``query_to_item`` maps each row to its correct column (default: the diagonal, e.g. MSR-VTT 1k-A where text i
    describes video i). For several correct columns per row use ``retrieval_metrics_multi``.
    """
    return metrics_from_ranks(retrieval_ranks(sim, query_to_item, ties=ties, chunk_size=chunk_size))


def retrieval_metrics_multi(
    sim: ArrayLike,
    positives: Sequence[Sequence[int]] | Positives,
    ties: Ties = "optimistic",
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Like ``retrieval_metrics`` but row q has several correct columns ``positives[q]``; the best-ranked counts.

    The video->text direction with many captions per video: ``sim`` is videos x texts and ``positives[v]`` lists
    video v's captions (``invert_mapping(text_to_video, num_videos)`` builds it).
    """
    return metrics_from_ranks(retrieval_ranks(sim, positives=positives, ties=ties, chunk_size=chunk_size))


def invert_mapping(text_to_video: Sequence[int] | np.ndarray | Tensor, num_videos: int) -> list[list[int]]:
    """text_to_video [T] -> for each video the list of its texts (a video with no text is an error)."""
    t2v = _as_index_array(text_to_video)
    if t2v.size and (t2v.min() < 0 or t2v.max() >= num_videos):
        raise ValueError(f"text_to_video has video index outside [0, {num_videos})")
    out: list[list[int]] = [[] for _ in range(num_videos)]
    for t, v in enumerate(t2v.tolist()):
        out[v].append(t)
    empty = [v for v, ts in enumerate(out) if not ts]
    if empty:
        raise ValueError(f"{len(empty)} videos have no caption (first: video {empty[0]}); drop them from the gallery")
    return out


def bidirectional_ranks(
    sim_t2v: ArrayLike,
    text_to_video: Sequence[int] | np.ndarray | Tensor | None = None,
    ties: Ties = "optimistic",
    *,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """{"t2v": ranks per text, "v2t": ranks per video} from one texts x videos matrix.

    Text->video: each text's video. Video->text: the best-ranked of the video's captions. ``text_to_video``
    defaults to the diagonal (one caption per video).
    """
    t, v = _check_matrix(sim_t2v)
    t2v = np.arange(t) if text_to_video is None else _as_index_array(text_to_video)
    if len(t2v) != t:
        raise ValueError(f"text_to_video has {len(t2v)} entries but the matrix has {t} text rows")
    t2v_ranks = retrieval_ranks(sim_t2v, t2v, ties=ties, chunk_size=chunk_size)
    v2t_ranks = retrieval_ranks(sim_t2v.T, positives=invert_mapping(t2v, v), ties=ties, chunk_size=chunk_size)
    return {"t2v": t2v_ranks, "v2t": v2t_ranks}


def bidirectional_metrics(
    sim_t2v: ArrayLike,
    text_to_video: Sequence[int] | np.ndarray | Tensor | None = None,
    ties: Ties = "optimistic",
    *,
    chunk_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """{"t2v": metrics, "v2t": metrics} from one texts x videos matrix (see ``bidirectional_ranks``)."""
    ranks = bidirectional_ranks(sim_t2v, text_to_video, ties, chunk_size=chunk_size)
    return {k: metrics_from_ranks(r) for k, r in ranks.items()}


@torch.no_grad()
def retrieval_ranks_from_embeddings(
    query_emb: Tensor,
    item_emb: Tensor,
    query_to_item: Sequence[int] | np.ndarray | Tensor | None = None,
    *,
    positives: Sequence[Sequence[int]] | Positives | None = None,
    ties: Ties = "optimistic",
    dsl_temperature: float | None = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Ranks with similarities = query_emb @ item_emb.T, computed chunk by chunk and never stored whole.

    For galleries whose full matrix does not fit in memory; only [chunk_size, N] scores exist at a time (on the
    embeddings' device). ``dsl_temperature`` applies DSL (see ``clipvip.eval.dsl``) exactly in two passes: the first
    accumulates each item's log-sum-exp over all queries, the second ranks ``S * exp(t*S - lse)``.
    """
    _check_ties(ties)
    if query_emb.ndim != 2 or item_emb.ndim != 2 or query_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"embeddings must be [Q, E] and [N, E], got {tuple(query_emb.shape)}, {tuple(item_emb.shape)}")
    q, n = int(query_emb.shape[0]), int(item_emb.shape[0])
    pos = _positives_for(q, n, query_to_item, positives)
    dtype = torch.float64 if torch.float64 in (query_emb.dtype, item_emb.dtype) else torch.float32
    item_t = item_emb.to(dtype).T
    lse = None
    if dsl_temperature is not None:
        lse = torch.full((n,), float("-inf"), dtype=dtype, device=item_emb.device)
        for s in range(0, q, chunk_size):
            scores = query_emb[s : s + chunk_size].to(dtype) @ item_t
            lse = torch.logaddexp(lse, torch.logsumexp(dsl_temperature * scores, dim=0))
    buf = np.empty((min(chunk_size, q), n), dtype=bool)
    out = np.empty(q, dtype=np.float64)
    for s in range(0, q, chunk_size):
        e = min(q, s + chunk_size)
        scores = query_emb[s:e].to(dtype) @ item_t
        if lse is not None:
            scores = scores * torch.exp(dsl_temperature * scores - lse)
        out[s:e] = _rank_chunk(_chunk_to_numpy(scores), pos, s, ties, buf)
    return out
