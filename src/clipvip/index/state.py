"""The index folder's current state on disk, read for an update: the last generation overlaid with pending chunks,
with damaged files named and left out (their videos are re-encoded), and a damaged ``index.json`` set aside.

Kept apart from the build (``clipvip.index.build``) because it is the repair logic: what a crash or a corrupted file
leaves behind, and what an update may trust of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipvip.index.store import COLUMNS, META_NAME, REBUILD, IndexDamagedError, empty_rows, read_index_file, read_meta
from clipvip.io import atomic_write_json

log = logging.getLogger(__name__)


def damage_note(e: IndexDamagedError) -> str:
    """What is damaged, without the "rerun clipvip index" advice meant for search and serve."""
    return str(e).replace(f"; {REBUILD}", "")


def read_pair(parquet: Path, npy: Path, dim: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows + embeddings of a generation or a pending chunk; ``IndexDamagedError`` (naming the file) when either
    is unreadable or they do not fit together."""
    df = read_index_file(parquet, pd.read_parquet)
    emb = read_index_file(npy, np.load)
    if emb.ndim != 2 or emb.shape[1] != dim or len(df) != len(emb) or not set(COLUMNS) <= set(df.columns):
        raise IndexDamagedError(
            f"{npy}: {emb.shape} embeddings for {len(df)} rows of {parquet.name}, expected [N, {dim}]"
        )
    return df, emb


def load_state(
    out: Path, meta: dict[str, Any], repaired: list[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray, list[Path]]:
    """Current rows + embeddings: the last generation overlaid with every complete pending chunk (for each path,
    the most recent source wins, so a chunk merged just before a crash cannot duplicate rows). A damaged generation
    or chunk is left out (and named in ``repaired``): its videos are simply not known, so they are encoded again."""
    frames: list[tuple[pd.DataFrame, np.ndarray]] = []
    dim = int(meta["model"]["config"]["embed_dim"])
    if meta.get("generation") is not None:
        g = meta["generation"]
        try:
            frames.append(read_pair(out / f"data-{g}.parquet", out / f"data-{g}.npy", dim))
        except IndexDamagedError as e:
            log.warning("%s; re-encoding the videos it held", damage_note(e))
            if repaired is not None:
                repaired.append(damage_note(e))
    chunks = []
    for pq in sorted((out / "pending").glob("chunk-*.parquet")):
        try:
            df, emb = read_pair(pq, pq.with_suffix(".npy"), dim)
        except IndexDamagedError as e:
            log.warning("ignoring pending chunk: %s", damage_note(e))
            continue
        frames.append((df, emb))
        chunks.append(pq)
    if not frames:
        return empty_rows(), np.zeros((0, 0), np.float32), chunks
    owner: dict[str, int] = {}
    for i, (df, _) in enumerate(frames):
        for p in df["path"].unique():
            owner[p] = i
    dfs, embs = [], []
    for i, (df, emb) in enumerate(frames):
        keep = np.asarray([owner[p] == i for p in df["path"]], dtype=bool)
        dfs.append(df[keep])
        embs.append(emb[keep])
    return pd.concat(dfs, ignore_index=True), np.concatenate(embs), chunks


def read_meta_or_set_aside(out: Path, repaired: list[str]) -> dict[str, Any] | None:
    """index.json, or None (a fresh start) when it is damaged: it is moved to ``index.json.damaged`` and the files
    it described are removed, since nothing else records which model made their embeddings (mixing models would
    make scores meaningless). Thumbnails do not depend on the model and are kept."""
    try:
        return read_meta(out)
    except IndexDamagedError as e:
        log.warning("%s; starting the index over (thumbnails kept)", damage_note(e))
        repaired.append(damage_note(e))
        os.replace(out / META_NAME, out / (META_NAME + ".damaged"))
        _remove_rows(out)
        return None


ROW_FILES = ("data-*.npy", "data-*.parquet", "ann-*.faiss", "pending/chunk-*")  # every file that holds index rows


def _remove_rows(out: Path) -> None:
    for pattern in ROW_FILES:
        for f in out.glob(pattern):
            f.unlink(missing_ok=True)


def drop_all(out: Path, meta: dict[str, Any]) -> None:
    """Forget an index's rows before re-encoding it: index.json first (atomically: from then on the old files are
    unreferenced), then the old generation, its ANN and any pending chunks."""
    atomic_write_json(out / META_NAME, {**meta, "generation": None, "ann": None, "count": 0, "failed": []})
    _remove_rows(out)
