"""Text <-> video retrieval evaluation: embed (cached) -> similarities -> both directions, optionally DSL / QB-Norm.

``evaluate_retrieval`` is what the trainer (periodic validation), the demo and ``clipvip eval`` call. Videos that
could not be decoded are dropped from the gallery together with their captions, and the counts are reported in the
result ("counts"), so a run never dies on one bad file but the numbers say what they cover.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from clipvip.eval.embed import (
    EmbeddingCache,
    data_fingerprint,
    embed_texts,
    embed_videos,
    embedding_valid_mask,
    model_fingerprint,
)
from clipvip.eval.metrics import (
    Ties,
    invert_mapping,
    metrics_from_ranks,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
)
from clipvip.eval.postprocess import dsl, qb_norm

log = logging.getLogger(__name__)

# above this many text x video scores the matrix is never built: ranks stream from the embeddings
MAX_MATRIX_ELEMS = 250_000_000  # 1 GB of float32


def _drop_skipped(
    text_emb: Tensor, video_emb: Tensor, text_to_video: np.ndarray
) -> tuple[Tensor, Tensor, np.ndarray, dict[str, int]]:
    valid = embedding_valid_mask(video_emb).numpy()
    counts = {"texts": int(len(text_to_video)), "videos": int(len(valid)), "skipped_videos": int((~valid).sum())}
    if valid.all():
        counts["dropped_texts"] = 0
        return text_emb, video_emb, text_to_video, counts
    new_index = np.cumsum(valid) - 1
    keep_text = valid[text_to_video]
    counts["dropped_texts"] = int((~keep_text).sum())
    if not keep_text.any():
        raise ValueError(f"all {len(valid)} videos were skipped: nothing to evaluate")
    return (
        text_emb[torch.from_numpy(keep_text)],
        video_emb[torch.from_numpy(valid)],
        new_index[text_to_video[keep_text]],
        counts,
    )


def score_retrieval(
    text_emb: Tensor,
    video_emb: Tensor,
    text_to_video: Sequence[int] | np.ndarray | None = None,
    *,
    use_dsl: bool = False,
    dsl_temperature: float = 100.0,
    ties: Ties = "optimistic",
    query_bank_emb: Tensor | None = None,
    qb_k: int = 1,
    qb_beta: float = 20.0,
    keep_ranks: bool = False,
) -> dict[str, Any]:
    """Metrics from embeddings: {"t2v", "v2t"} (+ "t2v_dsl", "v2t_dsl" with ``use_dsl``; + "t2v_qbnorm" with a
    ``query_bank_emb`` of e.g. training captions), "rsum" (sum of R@1/5/10 both ways, no post-processing),
    "counts", "ties", and with ``keep_ranks`` the per-query ranks under "ranks" (numpy, not JSON).

    DSL uses the statistics of all test queries (see ``clipvip.eval.postprocess``); QB-Norm only those of the bank.
    NaN rows in ``video_emb`` (skipped videos) are dropped with their texts and counted.
    """
    t2v = np.arange(len(text_emb)) if text_to_video is None else np.asarray(text_to_video, dtype=np.int64)
    if len(t2v) != len(text_emb):
        raise ValueError(f"{len(text_emb)} text embeddings but text_to_video has {len(t2v)} entries")
    text_emb, video_emb, t2v, counts = _drop_skipped(text_emb.float().cpu(), video_emb.float().cpu(), t2v)
    v2t = invert_mapping(t2v, len(video_emb))
    ranks: dict[str, np.ndarray] = {}
    if len(text_emb) * len(video_emb) <= MAX_MATRIX_ELEMS:
        sim = text_emb @ video_emb.T
        ranks["t2v"] = retrieval_ranks(sim, t2v, ties=ties)
        ranks["v2t"] = retrieval_ranks(sim.T, positives=v2t, ties=ties)
        if use_dsl:
            ranks["t2v_dsl"] = retrieval_ranks(dsl(sim, dsl_temperature), t2v, ties=ties)
            ranks["v2t_dsl"] = retrieval_ranks(dsl(sim.T, dsl_temperature), positives=v2t, ties=ties)
        if query_bank_emb is not None:
            bank_sim = query_bank_emb.float().cpu() @ video_emb.T
            ranks["t2v_qbnorm"] = retrieval_ranks(qb_norm(sim, bank_sim, k=qb_k, beta=qb_beta), t2v, ties=ties)
        del sim
    else:
        log.info("%d x %d scores: streaming ranks from embeddings", len(text_emb), len(video_emb))
        ranks["t2v"] = retrieval_ranks_from_embeddings(text_emb, video_emb, t2v, ties=ties)
        ranks["v2t"] = retrieval_ranks_from_embeddings(video_emb, text_emb, positives=v2t, ties=ties)
        if use_dsl:
            ranks["t2v_dsl"] = retrieval_ranks_from_embeddings(
                text_emb, video_emb, t2v, ties=ties, dsl_temperature=dsl_temperature
            )
            ranks["v2t_dsl"] = retrieval_ranks_from_embeddings(
                video_emb, text_emb, positives=v2t, ties=ties, dsl_temperature=dsl_temperature
            )
        if query_bank_emb is not None:
            raise ValueError("QB-Norm needs the full similarity matrix; this gallery is too large for it")
    out: dict[str, Any] = {name: metrics_from_ranks(r) for name, r in ranks.items()}
    out["rsum"] = sum(out[d][f"R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    out["counts"] = counts
    out["ties"] = ties
    if keep_ranks:
        out["ranks"] = ranks
    return out


def _coverage(counts: dict[str, Any], dataset: Any, video_emb: Tensor) -> dict[str, Any]:
    """What the numbers cover: videos / texts evaluated, and missing (no file, or unreadable) with the files named."""
    c = counts
    paths = getattr(dataset, "paths", None)
    bad = np.flatnonzero(~embedding_valid_mask(video_emb).numpy()).tolist()
    return {
        "evaluated_videos": c["videos"] - c.get("skipped_videos", 0),
        "evaluated_texts": c["texts"] - c.get("dropped_texts", 0),
        "missing_videos": c.get("missing_files", 0) + c.get("skipped_videos", 0),
        "missing_texts": c.get("dropped_texts", 0) + int(getattr(dataset, "missing_texts", 0) or 0),
        "skipped_files": [str(paths[i]) for i in bad] if paths is not None else bad,
    }


def compute_embeddings(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    text_batch_size: int = 256,
    context_length: int | None = None,
    cache_dir: str | Path | None = None,
    amp: bool = False,
    progress: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> tuple[Tensor, Tensor, bool]:
    """(text_emb [T, E], video_emb [V, E] with NaN rows for skipped videos, from_cache) for an eval dataset that
    exposes ``texts`` and ``text_to_video`` and yields one item per video."""
    texts = list(dataset.texts)
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    model_fp = data_fp = ""
    if cache is not None:
        model_fp = model_fingerprint(model)
        data_fp = data_fingerprint(dataset, extra={"context_length": context_length})
        hit = cache.load(model_fp, data_fp)
        if hit is not None:
            log.info("embeddings loaded from %s", cache.path(model_fp, data_fp))
            return hit[0], hit[1], True
    text_emb = embed_texts(model, texts, text_batch_size, context_length, progress=progress)
    video_emb = embed_videos(
        model,
        dataset,
        batch_size,
        num_workers,
        amp=amp,
        progress=progress,
        collate_fn=collate_fn,
        partial_path=cache.partial_path(model_fp, data_fp) if cache is not None else None,
    )
    if cache is not None:
        path = cache.save(model_fp, data_fp, text_emb, video_emb)
        log.info("embeddings cached in %s", path)
    return text_emb, video_emb, False


def evaluate_retrieval(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    use_dsl: bool = False,
    *,
    ties: Ties = "optimistic",
    text_batch_size: int = 256,
    context_length: int | None = None,
    cache_dir: str | Path | None = None,
    amp: bool = False,
    progress: bool = True,
    query_bank_texts: Sequence[str] | None = None,
    keep_ranks: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate text->video and video->text retrieval of ``model`` on an eval ``RetrievalDataset``.

    Returns ``score_retrieval``'s dict (e.g. ``result["t2v"]["R@1"]``) plus "from_cache". ``device`` moves the
    model there for the evaluation and back afterwards; the model's train/eval mode is restored too, so the trainer
    can call this mid-training. ``collate_fn`` defaults to ``clipvip.data.collate``. ``cache_dir`` enables the embedding cache; ``query_bank_texts`` enables QB-Norm.
    """
    original = next(model.parameters()).device
    target = torch.device(device) if device is not None else original
    if target != original:
        model.to(target)
    try:
        text_emb, video_emb, cached = compute_embeddings(
            model,
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            text_batch_size=text_batch_size,
            context_length=context_length,
            cache_dir=cache_dir,
            amp=amp,
            progress=progress,
            collate_fn=collate_fn,
        )
        bank = None
        if query_bank_texts is not None:
            bank = embed_texts(model, list(query_bank_texts), text_batch_size, context_length, progress=progress)
    finally:
        if target != original:
            model.to(original)
    out = score_retrieval(
        text_emb,
        video_emb,
        dataset.text_to_video,
        use_dsl=use_dsl,
        ties=ties,
        query_bank_emb=bank,
        keep_ranks=keep_ranks,
    )
    missing = getattr(dataset, "missing", None)  # videos whose files were not found (dropped with their texts)
    if missing:
        out["counts"]["missing_files"] = len(missing)
        log.warning("%d videos of the annotation have no file and are not evaluated", len(missing))
    out["counts"].update(_coverage(out["counts"], dataset, video_emb))
    out["from_cache"] = cached
    return out
