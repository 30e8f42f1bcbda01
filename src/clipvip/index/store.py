"""The on-disk video index and searching it.

Layout of an index folder::

    index.json               format, model (path, fingerprint, config), frames/size/windows, generation, ANN, failures
    data-<gen>.npy           L2-normalised fp32 embeddings [N, E], one row per video (or per window of a long video)
    data-<gen>.parquet       one metadata row per embedding row: path, size, mtime_ns, duration, start, end, thumb
    ann-<gen>.faiss          FAISS ANN index over data-<gen>.npy (only when N is large; see ``clipvip.index.ann``)
    pending/chunk-*.{npy,parquet}   encoded work not yet merged (an interrupted or running build)
    thumbs/<hash>.jpg        middle-frame thumbnails

Why generations: a consolidated index is several files that must agree; they are written under a new generation
number and only then does an atomic rewrite of ``index.json`` switch readers over, so a crash at any point leaves
either the old or the new index, never a mix. Pending chunks make encoding interrupt-safe: every chunk is written
atomically (.npy first, then the .parquet that marks it complete), and the next build picks them up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from clipvip.index.ann import AnnIndex, exact_topk
from clipvip.weights.fingerprint import model_fingerprint, same_model

FORMAT_VERSION = 1
META_NAME = "index.json"
COLUMNS = ["path", "size", "mtime_ns", "duration", "start", "end", "thumb"]


class IndexFormatError(ValueError):
    """An index folder that is missing, damaged, or does not fit the request (names the folder and the problem)."""


class IndexDamagedError(IndexFormatError):
    """One file of an index is missing, truncated or corrupted (names it): ``clipvip index`` rebuilds it."""


REBUILD = "rerun `clipvip index` with the same --out to rebuild it"
T = TypeVar("T")


def read_index_file(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)``, with any failure of a missing, truncated or corrupted file (numpy, pyarrow and FAISS each
    raise their own kinds) turned into one ``IndexDamagedError`` that names the file and what to do."""
    if not path.is_file():
        raise IndexDamagedError(f"{path}: index file missing; {REBUILD}")
    try:
        return reader(path)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        msg = " ".join(str(e).split())[:120]
        raise IndexDamagedError(f"{path}: damaged index file; {REBUILD} ({type(e).__name__}: {msg})") from e


def read_meta(root: str | Path) -> dict[str, Any]:
    p = Path(root) / META_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{root}: not a clipvip index (no {META_NAME}); create one with `clipvip index`")
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexDamagedError(f"{p}: damaged index metadata; {REBUILD} ({e})") from e
    if not isinstance(meta, dict):
        raise IndexDamagedError(f"{p}: damaged index metadata (not a JSON object); {REBUILD}")
    if meta.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{p}: index format {meta.get('format')!r}, this clipvip reads {FORMAT_VERSION}")
    return meta


def empty_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="int64"
                if c in ("size", "mtime_ns")
                else "float64"
                if c in ("duration", "start", "end")
                else "object"
            )
            for c in COLUMNS
        }
    )


@dataclass
class Hit:
    """One search result. ``start``/``end``: the matched window in seconds (the whole video when not windowed)."""

    rank: int
    row: int
    video: int  # index of the video (distinct path) in ``VideoIndex.videos``
    path: str
    score: float
    start: float
    end: float | None
    duration: float | None
    thumb: str | None  # absolute path of the thumbnail, if any

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class VideoIndex:
    """A consolidated index opened for search. Embeddings are memory-mapped; ANN is used when one was built."""

    def __init__(
        self, root: Path, meta: dict[str, Any], rows: pd.DataFrame, emb: np.ndarray, ann: AnnIndex | None
    ) -> None:
        self.root, self.meta, self.rows, self.emb, self.ann = root, meta, rows, emb, ann
        if len(rows) != len(emb):
            raise IndexDamagedError(f"{root}: {len(rows)} metadata rows but {len(emb)} embeddings; {REBUILD}")
        self.videos: list[str] = list(dict.fromkeys(rows["path"].tolist()))
        vid = {p: i for i, p in enumerate(self.videos)}
        self.row_video = np.asarray([vid[p] for p in rows["path"]], dtype=np.int64)
        self.max_rows_per_video = int(np.bincount(self.row_video).max()) if len(rows) else 0

    @classmethod
    def open(cls, root: str | Path, use_ann: bool = True) -> VideoIndex:
        root = Path(root).resolve()
        meta = read_meta(root)
        if meta.get("kind") == "ondisk":  # built by `clipvip index --from-embeddings` (clipvip.index.ondisk)
            from clipvip.index.ondisk import OnDiskIndex

            return OnDiskIndex.open(root, meta)
        gen = meta.get("generation")
        if gen is None:
            raise IndexFormatError(
                f"{root}: the index has no finished build yet (an interrupted first run?); "
                "run `clipvip index` again to finish it"
            )
        emb = read_index_file(root / f"data-{gen}.npy", lambda p: np.load(p, mmap_mode="r"))
        dim = meta.get("model", {}).get("config", {}).get("embed_dim")
        if emb.ndim != 2 or (dim is not None and emb.shape[1] != dim):
            raise IndexDamagedError(
                f"{root / f'data-{gen}.npy'}: damaged index file (shape {emb.shape}, expected [N, {dim}]); {REBUILD}"
            )
        rows = read_index_file(root / f"data-{gen}.parquet", pd.read_parquet)
        ann = None
        if use_ann and meta.get("ann"):
            a = meta["ann"]
            ann = read_index_file(root / a["file"], lambda p: AnnIndex.load(p, a["kind"], a["knob"]))
            if ann.ntotal != len(emb):
                raise IndexDamagedError(f"{root / a['file']}: {ann.ntotal} vectors for {len(emb)} rows; {REBUILD}")
        return cls(root, meta, rows.reset_index(drop=True), emb, ann)

    def __len__(self) -> int:
        return len(self.rows)

    def thumb_path(self, row: int) -> Path | None:
        t = self.rows.at[row, "thumb"]
        return (self.root / "thumbs" / t) if isinstance(t, str) and t else None

    def _topk_rows(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.ann is not None:
            s, i = self.ann.search(q[None], n)
            keep = i[0] >= 0
            return s[0][keep], i[0][keep]
        s, i = exact_topk(self.emb, q[None], n)
        return s[0], i[0]

    def search(
        self, query: np.ndarray, k: int = 10, per_video: bool = True, exclude_video: int | None = None
    ) -> list[Hit]:
        """Top-``k`` rows by cosine similarity to ``query`` [E] (L2-normalised). ``per_video``: keep only the
        best window of each video (otherwise one long video can fill the page). ``exclude_video``: drop that
        video (``more like this`` should not return the video itself)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.emb.shape[1]:
            raise ValueError(f"query has dimension {q.shape[0]}, index {self.root} has {self.emb.shape[1]}")
        n_total = len(self)
        if n_total == 0 or k <= 0:
            return []
        spread = self.max_rows_per_video if per_video else 1
        n = min(n_total, (k + (1 if exclude_video is not None else 0)) * max(1, min(spread, 4)))
        while True:
            scores, ids = self._topk_rows(q, n)
            hits = self._collect(scores, ids, k, per_video, exclude_video)
            if len(hits) >= k or n >= n_total or n >= 65_536:
                return hits
            n = min(n_total, n * 4)

    def _collect(
        self, scores: np.ndarray, ids: np.ndarray, k: int, per_video: bool, exclude_video: int | None
    ) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[int] = set()
        for s, r in zip(scores.tolist(), ids.tolist(), strict=True):
            v = int(self.row_video[r])
            if v == exclude_video or (per_video and v in seen):
                continue
            seen.add(v)
            row = self.rows.iloc[r]
            end = None if pd.isna(row["end"]) else float(row["end"])
            dur = None if pd.isna(row["duration"]) else float(row["duration"])
            thumb = self.thumb_path(r)
            hits.append(
                Hit(
                    len(hits) + 1,
                    int(r),
                    v,
                    str(row["path"]),
                    float(s),
                    float(row["start"]),
                    end,
                    dur,
                    str(thumb) if thumb else None,
                )
            )
            if len(hits) == k:
                break
        return hits

    def similar(self, row: int, k: int = 10) -> list[Hit]:
        """ "More like this": the stored embedding of ``row`` as the query, its own video excluded."""
        if not 0 <= row < len(self):
            raise KeyError(f"row {row} not in index {self.root} (0..{len(self) - 1})")
        return self.search(self.vector(row), k, exclude_video=self.video_of(row))

    def vector(self, row: int) -> np.ndarray:
        """The stored embedding of ``row`` (fp32)."""
        return np.asarray(self.emb[row], dtype=np.float32)

    def video_of(self, row: int) -> int:
        """The ``Hit.video`` id of ``row``."""
        return int(self.row_video[row])


def load_index_model(index: VideoIndex, model_path: str | Path | None = None) -> Any:
    """Load the model an index was built with (or ``model_path``) and check its weights fingerprint, since text
    embeddings from any other model would be compared against the wrong embedding space."""
    import clipvip

    path = model_path or index.meta["model"]["path"]
    model = clipvip.load(path, num_frames=index.meta["settings"]["num_frames"])
    if not same_model(index.meta["model"]["fingerprint"], model_fingerprint(model)):
        raise IndexFormatError(
            f"{path}: not the model index {index.root} was built with "
            f"(fingerprint {index.meta['model']['fingerprint']}); pass that model with --model"
        )
    return model.eval()
