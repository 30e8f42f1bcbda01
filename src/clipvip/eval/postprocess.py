"""Similarity post-processing for retrieval: DSL and QB-Norm. Both are explicit options, never applied silently.

Rows are queries and columns gallery items in both, so the same function serves text->video (texts x videos) and
video->text (pass the transposed matrix).

* ``dsl`` (dual softmax, as used by CLIP-ViP's evaluation): ``S * softmax(t * S, dim=0)``. The softmax runs over
  the *test queries*, i.e. it uses statistics of the whole test query set (an item that many queries like is
  down-weighted). Results with DSL are therefore not comparable to per-query retrieval; report both.
* ``qb_norm`` (Bogolin et al., CVPR 2022, dynamic inverted softmax): the normaliser of each gallery item comes from a
  *query bank* (e.g. training captions) instead of the test queries; only queries whose top-1 item is one the bank
  "activates" (is in some bank query's top-k) are renormalised.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clipvip.eval.metrics import ArrayLike

_CHUNK_ELEMS = 1 << 22


def _to_tensor(x: ArrayLike) -> tuple[Tensor, bool]:
    """(tensor sharing memory where possible, was_numpy)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x), True
    if isinstance(x, Tensor):
        return x.detach(), False
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def _rows_per_chunk(n: int) -> int:
    return max(1, _CHUNK_ELEMS // max(1, n))


def _column_logsumexp(s: Tensor, scale: float) -> Tensor:
    """logsumexp over rows of ``scale * s`` per column, in float32/64, chunked over rows (no full temporary)."""
    q, n = s.shape
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    lse = torch.full((n,), float("-inf"), dtype=dtype, device=s.device)
    step = _rows_per_chunk(n)
    for a in range(0, q, step):
        lse = torch.logaddexp(lse, torch.logsumexp(scale * s[a : a + step].to(dtype), dim=0))
    return lse


@torch.no_grad()
def dsl(sim: ArrayLike, temperature: float = 100.0) -> ArrayLike:
    """The paper's dual-softmax inference: ``sim * softmax(temperature * sim, dim=0)``.

    Uses the statistics of all test queries (the softmax is over rows), see the module docstring. Returns the same
    type as the input (numpy or tensor), float32 (float64 for float64 input); chunked, so besides the output only
    row-chunk temporaries are allocated.
    """
    s, was_numpy = _to_tensor(sim)
    if s.ndim != 2:
        raise ValueError(f"dsl expects a 2-D queries x items matrix, got shape {tuple(s.shape)}")
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    lse = _column_logsumexp(s, temperature)
    out = torch.empty(s.shape, dtype=dtype, device=s.device)
    step = _rows_per_chunk(s.shape[1])
    for a in range(0, s.shape[0], step):
        c = s[a : a + step].to(dtype)
        out[a : a + step] = c * torch.exp(temperature * c - lse)
    return out.numpy() if was_numpy else out


def _topk_items(sim: Tensor, k: int) -> Tensor:
    """Sorted unique item indices appearing in some row's top-k."""
    step = _rows_per_chunk(sim.shape[1])
    found = torch.zeros(sim.shape[1], dtype=torch.bool, device=sim.device)
    for a in range(0, sim.shape[0], step):
        idx = torch.topk(sim[a : a + step].float(), k=min(k, sim.shape[1]), dim=1).indices
        found[idx.reshape(-1)] = True
    return found


@torch.no_grad()
def qb_norm(sim: ArrayLike, query_bank_sim: ArrayLike, k: int = 1, beta: float = 20.0) -> ArrayLike:
    """QB-Norm with the dynamic inverted softmax (Bogolin et al. 2022).

    ``sim``: test queries x gallery; ``query_bank_sim``: bank queries (e.g. training captions) x the same gallery.
    Items in the top-``k`` of some bank query are "activated". A test query whose top-1 item is activated gets its row
    replaced by ``exp(beta * s) / sum_b exp(beta * bank[b, j])`` (computed as ``exp(beta*s - lse_j)``); other rows
    keep their raw scores. Ranking is per row, so mixing the two scales across rows is harmless.
    """
    s, was_numpy = _to_tensor(sim)
    bank, _ = _to_tensor(query_bank_sim)
    if s.ndim != 2 or bank.ndim != 2 or s.shape[1] != bank.shape[1]:
        raise ValueError(
            f"qb_norm needs sim [Q, N] and query_bank_sim [B, N] over the same gallery, got {tuple(s.shape)} "
            f"and {tuple(bank.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bank = bank.to(s.device)
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    activated = _topk_items(bank, k)
    lse = _column_logsumexp(bank, beta).to(dtype)
    out = s.to(dtype).clone()
    step = _rows_per_chunk(s.shape[1])
    for a in range(0, s.shape[0], step):
        c = out[a : a + step]
        rows = activated[c.argmax(dim=1)]
        if rows.any():
            c[rows] = torch.exp(beta * c[rows] - lse)
    return out.numpy() if was_numpy else out
