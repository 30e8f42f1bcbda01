"""``clipvip index --from-embeddings DIR``: a compressed FAISS index over an embedding folder, under a RAM budget.

WHY this shape. At 100M x 512 the fp32 vectors are 200 GB; what must be in RAM to answer a query is much less:

- IVF-PQ: every vector becomes ``m / 2`` bytes of 4-bit fast-scan PQ code + an 8-byte id in one of ``nlist``
  inverted lists. The lists live in one file that is memory-mapped (``clipvip.index.disklists``): a query touches
  only the ``nprobe`` lists it scans, the OS pages them in, and the process's own memory is the coarse centroids
  (``nlist * d * 4`` bytes) and the PQ codebooks.
- Exact re-rank: PQ distances are approximate, so the top ``rerank`` candidates are re-scored against the fp16
  embeddings of the folder (``rerank * d * 2`` bytes per query, read with ``pread`` from the page cache: a mapping
  would count every row ever touched in the search process's RSS; see ``EmbeddingFolder.read_rows``).
- Metadata is read per hit, one parquet row group at a time (``EmbeddingFolder.row``), never all at once.

Parameters come from the budget the way autofaiss chooses them (``clipvip.index.budget``). The build streams the
folder: train on a sample, add in blocks (each block a small IVF index kept in ``build/``, so a killed build
resumes), merge the blocks in RAM (the whole index fits the budget by construction), then write the lists file
once. ``nprobe`` and the re-rank depth are tuned afterwards to the cheapest pair that reaches ``target_recall``
recall@10 after re-ranking, against exact search over the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipvip.embedjob.layout import EmbeddingFolder
from clipvip.index.ann import AnnIndex
from clipvip.index.budget import (
    ID_BYTES,
    IndexParams,
    OnDiskConfig,
    choose_params,
)
from clipvip.index.disklists import attach_lists, faiss_ivf, write_lists
from clipvip.index.ondisk_tune import rerank, tune_nprobe
from clipvip.index.store import FORMAT_VERSION, META_NAME, Hit, VideoIndex
from clipvip.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

KIND = "ondisk"

HIT_COLUMNS = ("path", "start", "end", "duration")  # what a search hit shows; other columns are read on demand


@dataclass
class OnDiskReport:
    index: Path
    count: int
    params: IndexParams
    nprobe: int
    rerank: int
    recall: float
    seconds: float
    disk_bytes: int

    def summary(self) -> str:
        return (
            f"index {self.index}: {self.count} vectors, {self.params.factory} on disk "
            f"({self.disk_bytes / 2**20:.1f} MiB, est. RAM {self.params.estimated_bytes / 2**20:.1f} MiB), "
            f"nprobe={self.nprobe}, re-rank {self.rerank} -> recall@10 {self.recall:.3f} after re-rank, in {self.seconds:.1f}s"
        )


def _train_sample(folder: EmbeddingFolder, params: IndexParams, cfg: OnDiskConfig) -> np.ndarray:
    n = len(folder)
    want = min(n, max(params.nlist * cfg.train_per_list, 256 * 39 if params.pq_m else 0), cfg.max_train)
    rng = np.random.default_rng(cfg.seed)
    ids = np.sort(rng.choice(n, want, replace=False)) if want < n else np.arange(n)
    return folder.vectors(ids)


def build_from_embeddings(
    embeddings: str | Path, out: str | Path, cfg: OnDiskConfig | None = None, progress: bool = True
) -> OnDiskReport:
    """Build (or resume building) the on-disk index at ``out`` from the embedding folder (see module docstring).

    Resumable: the trained index and every added block are kept in ``out/build/`` until the merge, and a rerun
    with the same parameters reuses them."""
    import faiss
    from tqdm import tqdm

    t0 = time.perf_counter()
    cfg = cfg or OnDiskConfig()
    folder = EmbeddingFolder(embeddings)
    n, d = len(folder), folder.dim
    if n == 0:
        raise ValueError(f"{embeddings}: the embedding folder holds no vectors")
    params = choose_params(n, d, cfg)
    out = Path(out)
    old_gen = _previous_generation(out)
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    plan = {"n": n, "d": d, "params": asdict(params), "embeddings": str(folder.root), "seed": cfg.seed}
    plan_file = build / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text()) != plan:
        shutil.rmtree(build)
        build.mkdir(parents=True)
    atomic_write_json(plan_file, plan)

    trained = build / "trained.index"
    if not trained.exists():
        index = faiss.index_factory(d, params.factory, faiss.METRIC_INNER_PRODUCT)
        log.info("training %s on a sample", params.factory)
        index.train(_train_sample(folder, params, cfg))
        _write_index(index, trained)
    # blocks: a block's fp32 rows sit in RAM while it is added; a quarter of the budget, at least 64k rows
    block_rows = int(max(65_536, min(n, cfg.max_index_memory // 4 // (4 * d + params.pq_m // 2 + ID_BYTES))))
    blocks = []
    bar = tqdm(total=n, desc="adding", unit="vec", unit_scale=True, disable=not progress)
    for b, lo in enumerate(range(0, n, block_rows)):
        path = build / f"block_{b:05d}.index"
        blocks.append(str(path))
        hi = min(n, lo + block_rows)
        if not path.exists():
            index = faiss.read_index(str(trained))
            for first, x in _blocks_between(folder, lo, hi):
                index.add_with_ids(x, np.arange(first, first + len(x), dtype=np.int64))
            _write_index(index, path)
        bar.update(hi - lo)
    bar.close()

    gen = old_gen + 1
    index = faiss.read_index(str(trained))
    lists, table = out / f"lists-{gen}.ivfdata", out / f"lists-{gen}.ivflists"
    write_lists(index, blocks, lists, table)
    index_file = out / f"ivfpq-{gen}.index"
    with atomic_path(index_file) as tmp:  # the trained index with empty lists: ``attach_lists`` puts the file's in
        shutil.copyfile(trained, tmp)
    del index
    index = read_ondisk(index_file, table, n)
    nprobe, depth, recall = tune_nprobe(index, folder, cfg)
    meta = {
        "format": FORMAT_VERSION,
        "kind": KIND,
        "generation": gen,
        "model": folder.meta["model"],
        "settings": folder.meta["settings"],
        "embeddings": str(folder.root),
        "count": n,
        "dim": d,
        "ann": {
            "kind": "ivf",
            "knob": nprobe,
            "file": index_file.name,
            "lists": lists.name,
            "list_table": table.name,
            "factory": params.factory,
            "rerank": depth,
            "recall_at_10": recall,
            "estimated_ram_bytes": params.estimated_bytes,
        },
        "failed": [],
    }
    atomic_write_json(out / META_NAME, meta)  # readers switch to the new generation here
    shutil.rmtree(build)
    if old_gen:
        for name in (f"ivfpq-{old_gen}.index", f"lists-{old_gen}.ivfdata", f"lists-{old_gen}.ivflists"):
            (out / name).unlink(missing_ok=True)
    disk = sum((out / f).stat().st_size for f in (index_file.name, lists.name, table.name))
    return OnDiskReport(out, n, params, nprobe, depth, recall, time.perf_counter() - t0, disk)


def _previous_generation(out: Path) -> int:
    """0 for a new folder; the generation of an on-disk index being rebuilt; a video index is never overwritten."""
    from clipvip.index.store import read_meta

    if not (out / META_NAME).exists():
        return 0
    meta = read_meta(out)
    if meta.get("kind") != KIND:
        raise ValueError(f"{out}: holds a `clipvip index` of videos; use a new --out folder for --from-embeddings")
    return int(meta.get("generation") or 0)


def _blocks_between(folder: EmbeddingFolder, lo: int, hi: int, step: int = 65_536) -> Any:
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        yield a, folder.vectors(np.arange(a, b))


def _write_index(index: Any, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """FAISS's C++ code prints progress notes ("resizing ...", "updating ondisk filename") to the process's stdout;
    they would corrupt ``clipvip search --json``, so they go to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_ondisk(path: Path, table: Path, count: int) -> Any:
    """The index with its inverted lists memory-mapped from the files beside it (wherever the folder is)."""
    import faiss

    if not path.is_file():
        raise FileNotFoundError(f"{path}: on-disk index file missing")
    with _native_stdout_to_stderr():
        return attach_lists(faiss.read_index(str(path)), table, count)


def open_faiss_index(out: Path, meta: dict[str, Any]) -> Any:
    """The FAISS index of the on-disk index folder ``out`` (whose meta file is ``meta``), lists mapped."""
    if "list_table" not in meta["ann"]:
        from clipvip.index.store import IndexFormatError

        raise IndexFormatError(f"{out}: built by an older clipvip (FAISS-native list file); build it again")
    return read_ondisk(out / meta["ann"]["file"], out / meta["ann"]["list_table"], int(meta["count"]))


def retune(out: str | Path, cfg: OnDiskConfig | None = None) -> OnDiskReport:
    """Tune an on-disk index's nprobe and re-rank depth again (e.g. for another ``target_recall`` or
    ``max_nprobe``) without rebuilding it; rewrites only the index's meta file, atomically."""
    from clipvip.index.store import read_meta

    t0 = time.perf_counter()
    cfg = cfg or OnDiskConfig()
    out = Path(out)
    meta = read_meta(out)
    if meta.get("kind") != KIND:
        raise ValueError(f"{out}: not an on-disk index (built with --from-embeddings); nothing to re-tune")
    folder = EmbeddingFolder(meta["embeddings"])
    index = open_faiss_index(out, meta)
    nprobe, depth, recall = tune_nprobe(index, folder, cfg)
    meta["ann"].update({"knob": nprobe, "rerank": depth, "recall_at_10": recall})
    atomic_write_json(out / META_NAME, meta)
    params = IndexParams.parse(meta["ann"]["factory"], int(meta["ann"]["estimated_ram_bytes"]))
    disk = sum((out / meta["ann"][f]).stat().st_size for f in ("file", "lists", "list_table"))
    return OnDiskReport(out, len(folder), params, nprobe, depth, recall, time.perf_counter() - t0, disk)


class _LazyRows:
    """``rows.at[row, column]`` and ``len(rows)`` for the web app, reading metadata one row group at a time."""

    def __init__(self, folder: EmbeddingFolder) -> None:
        self.folder = folder
        self.at = self

    def __getitem__(self, key: tuple[int, str]) -> Any:
        row, col = key
        return self.folder.row(int(row))[col]

    def __len__(self) -> int:
        return len(self.folder)


class _RowPaths:
    """``videos[v]``: here a "video" is addressed by any of its rows (listing distinct paths would read all)."""

    def __init__(self, folder: EmbeddingFolder) -> None:
        self.folder = folder

    def __getitem__(self, v: int) -> str:
        return str(self.folder.row(int(v))["path"])

    def __len__(self) -> int:
        return len(self.folder)


class OnDiskIndex(VideoIndex):
    """A ``VideoIndex`` over an on-disk IVF-PQ index + its embedding folder; ``search``/``serve`` use it unchanged.

    Differences: ``Hit.video`` is a row id (``videos[row]`` is that row's path), there are no thumbnails, and
    nothing per row is held in memory."""

    def __init__(self, root: Path, meta: dict[str, Any], folder: EmbeddingFolder, index: Any) -> None:
        self.root, self.meta, self.folder = root, meta, folder
        ivf = faiss_ivf(index)
        if hasattr(ivf, "implem"):
            # fast-scan: one query's lists split over FAISS's threads (implementation 15: per-thread reservoirs,
            # merged). Measured at 10M, nprobe 1,024, 2 quiet cores: 8.3 ms against 15.2 ms for the default, which
            # parallelises over queries only. The tuner keeps the default: it searches 200 queries at once.
            ivf.implem = 15
        self.ann = AnnIndex(index, "ivf", int(meta["ann"]["knob"]))
        self.rerank_depth = int(meta["ann"].get("rerank", 100))
        self.rows = _LazyRows(folder)  # type: ignore[assignment]
        self.videos = _RowPaths(folder)  # type: ignore[assignment]
        self.emb = None  # type: ignore[assignment]

    @classmethod
    def open(cls, root: str | Path, meta: dict[str, Any] | None = None) -> OnDiskIndex:  # type: ignore[override]
        from clipvip.index.store import IndexFormatError, read_meta

        root = Path(root).resolve()
        meta = meta or read_meta(root)
        try:
            folder = EmbeddingFolder(meta["embeddings"])
        except (FileNotFoundError, ValueError) as e:
            raise IndexFormatError(f"{root}: cannot open its embedding folder ({e})") from e
        if len(folder) != meta["count"]:
            raise IndexFormatError(f"{root}: built over {meta['count']} vectors, {folder.root} now holds {len(folder)}")
        return cls(root, meta, folder, open_faiss_index(root, meta))

    def __len__(self) -> int:
        return len(self.folder)

    def thumb_path(self, row: int) -> Path | None:
        return None

    def search(
        self, query: np.ndarray, k: int = 10, per_video: bool = True, exclude_video: int | None = None
    ) -> list[Hit]:
        """Top-``k`` rows: IVF-PQ candidates, re-scored exactly; ``per_video`` keeps each path's best row,
        ``exclude_video`` (a row id) drops every row of that row's path."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.folder.dim:
            raise ValueError(f"query has dimension {q.shape[0]}, index {self.root} has {self.folder.dim}")
        if k <= 0 or len(self) == 0:
            return []
        excluded = self.folder.row(exclude_video, HIT_COLUMNS)["path"] if exclude_video is not None else None
        depth = max(self.rerank_depth, 10 * k)
        while True:
            _, cand = self.ann.search(q[None], depth)
            scores, ids = rerank(self.folder, q, cand[0])
            hits = self._hits(scores, ids, k, per_video, excluded)
            if len(hits) >= k or depth >= len(self) or depth >= 65_536:
                return hits
            depth *= 4

    def _hits(self, scores: np.ndarray, ids: np.ndarray, k: int, per_video: bool, excluded: str | None) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        batch = max(k, 16)  # metadata of a batch of candidates is read at once (``EmbeddingFolder.rows``)
        for lo in range(0, len(ids), batch):
            rows = self.folder.rows(ids[lo : lo + batch].tolist(), HIT_COLUMNS)
            for s, r, row in zip(scores[lo : lo + batch].tolist(), ids[lo : lo + batch].tolist(), rows, strict=True):
                path = str(row["path"])
                if path == excluded or (per_video and path in seen):
                    continue
                seen.add(path)
                end, dur = row.get("end"), row.get("duration")
                hits.append(Hit(len(hits) + 1, r, r, path, float(s), float(row.get("start") or 0.0), end, dur, None))
                if len(hits) == k:
                    return hits
        return hits

    def vector(self, row: int) -> np.ndarray:
        return self.folder.read_rows(np.asarray([row]))[0]

    def video_of(self, row: int) -> int:
        return row  # a "video" is addressed by its row; ``search`` drops every row of that row's path
