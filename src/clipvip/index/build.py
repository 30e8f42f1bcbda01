"""Building and updating a video index incrementally (see ``clipvip.index.store`` for the on-disk layout).

A run walks the folder, keeps the rows of files whose (path, size, mtime) are unchanged, encodes new and changed
files, drops deleted ones, skips (and lists) files that fail to decode, then writes a new generation. Encoded work
is flushed to ``pending/`` in chunks as it goes (also when interrupted), so a re-run only encodes what is missing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipvip.index.ann import AnnConfig, build_ann
from clipvip.index.state import drop_all, load_state, read_meta_or_set_aside
from clipvip.index.store import (
    FORMAT_VERSION,
    META_NAME,
    IndexFormatError,
    model_fingerprint,
)
from clipvip.io import atomic_save_npy, atomic_save_parquet, atomic_write_bytes, atomic_write_json
from clipvip.weights.fingerprint import same_model

log = logging.getLogger(__name__)


@dataclass
class IndexConfig:
    """How videos are turned into index rows. Stored in index.json; an existing index must be updated with the same
    settings (mixing them would make scores incomparable)."""

    num_frames: int | None = None  # None: the model's config.num_frames
    window: float | None = None  # seconds; None: one row per video. Else fixed-length windows for long videos
    stride: float | None = None  # seconds between window starts (default: window, i.e. no overlap)
    thumb_size: int = 160
    batch_size: int = 8
    chunk_rows: int = 64  # rows per pending chunk: the most encoded work an interrupt can lose is what is unflushed
    decode_workers: int = 2
    ann: AnnConfig = field(default_factory=AnnConfig)
    # An existing index built with other settings (window, stride, frames) is re-encoded from scratch, after a
    # warning; with another model it is an error unless ``reindex`` (scores of two models are not comparable).
    reindex: bool = False


@dataclass
class BuildReport:
    """What a build did; ``failed`` lists (path, reason) for every file that was skipped."""

    index: Path
    total_videos: int = 0
    total_rows: int = 0
    unchanged: int = 0
    encoded: int = 0
    resumed: int = 0  # files taken from pending chunks of an earlier, interrupted run
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # damaged index files found, whose content was rebuilt
    ann: str = "exact"
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"index {self.index}: {self.total_videos} videos, {self.total_rows} rows ({self.ann} search); "
            f"encoded {self.encoded}, resumed {self.resumed}, unchanged {self.unchanged}, deleted {self.deleted}, "
            f"failed {len(self.failed)} in {self.seconds:.1f}s"
        ]
        lines += [f"  rebuilt after: {why}" for why in self.repaired]
        lines += [f"  skipped {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def find_videos(root: str | Path) -> list[Path]:
    """Video files under ``root`` (recursive, by extension, case-insensitive), sorted; hidden files skipped."""
    from clipvip.video import VIDEO_EXTENSIONS

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [
            Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS
        ]
    return sorted(p.resolve() for p in out)


def windows(duration: float | None, window: float | None, stride: float | None) -> list[tuple[float, float | None]]:
    """(start, end) seconds of each row of a video: the whole video, or full-length windows every ``stride``
    seconds when it is longer than ``window`` (the last one is moved back to end exactly at the end)."""
    if window is None or duration is None or duration <= window:
        return [(0.0, duration)]
    stride = stride or window
    out: list[tuple[float, float | None]] = []
    s = 0.0
    while s + window < duration - 1e-9:
        out.append((s, s + window))
        s += stride
    out.append((duration - window, duration))
    return out


def _thumb_name(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(f"{path}|{size}|{mtime_ns}".encode()).hexdigest()[:20] + ".jpg"


def _write_thumb(dst: Path, path: Path, size: int) -> None:
    from PIL import Image

    from clipvip.video import read_middle_frame

    frame = read_middle_frame(path, size=size, resize="crop")[0].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=85)
    atomic_write_bytes(dst, buf.getvalue())


@dataclass
class _FileJob:
    path: Path
    size: int
    mtime_ns: int


def _decode(job: _FileJob, num_frames: int, image_size: int, cfg: IndexConfig, thumbs: Path) -> dict[str, Any]:
    """Decode every row (window) of one file + its thumbnail. Runs in a worker thread (PyAV releases the GIL)."""
    from clipvip.video import normalize, probe, read_frames

    duration = probe(job.path).duration if cfg.window is not None else None
    clips, rows = [], []
    for start, end in windows(duration, cfg.window, cfg.stride):
        vf = read_frames(
            job.path,
            num_frames,
            image_size,
            start=start if cfg.window is not None and duration else None,
            end=end if cfg.window is not None and duration else None,
        )
        duration = duration if duration is not None else vf.duration
        clips.append(normalize(vf.frames))
        rows.append((start, end))
    thumb = _thumb_name(str(job.path), job.size, job.mtime_ns)
    _write_thumb(thumbs / thumb, job.path, cfg.thumb_size)
    if cfg.window is None:
        rows = [(0.0, duration)]
    return {
        "clips": clips,
        "rows": [
            {
                "path": str(job.path),
                "size": job.size,
                "mtime_ns": job.mtime_ns,
                "duration": duration,
                "start": s,
                "end": e if e is not None else duration,
                "thumb": thumb,
            }
            for s, e in rows
        ],
    }


def _prefetch(jobs: list[_FileJob], fn: Any, workers: int) -> Iterator[tuple[_FileJob, Future]]:
    """Yield (job, future) in order while up to ``2 * workers`` decodes run ahead."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[tuple[_FileJob, Future]] = []
        it = iter(jobs)
        for job in it:
            pending.append((job, pool.submit(fn, job)))
            if len(pending) >= 2 * max(1, workers):
                break
        while pending:
            yield pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))


def build_index(
    video_dir: str | Path,
    out: str | Path,
    model: Any,
    model_path: str | Path,
    cfg: IndexConfig | None = None,
    progress: bool = True,
    fingerprint: str | None = None,
) -> BuildReport:
    """Create or update the index at ``out`` from the videos under ``video_dir`` (see the module docstring).

    ``model``: a CLIPViP (``encode_video``); ``model_path``: where it was loaded from (recorded so ``search`` and
    ``serve`` can load the same model; the weights fingerprint is checked on every update and load)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    cfg = cfg or IndexConfig()
    out = Path(out)
    video_dir = Path(video_dir).resolve()
    files = find_videos(video_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pending").mkdir(exist_ok=True)
    (out / "thumbs").mkdir(exist_ok=True)
    num_frames = cfg.num_frames or model.config.num_frames
    image_size = model.config.vision.image_size
    if fingerprint is None:  # pass it when ``model`` was converted (e.g. bf16) after loading
        fingerprint = model_fingerprint(model)
    settings = {
        "num_frames": num_frames,
        "image_size": image_size,
        "window": cfg.window,
        "stride": (cfg.stride or cfg.window) if cfg.window else None,
    }
    repaired: list[str] = []
    meta = read_meta_or_set_aside(out, repaired) if (out / META_NAME).exists() else None
    if meta is not None and not same_model(meta["model"]["fingerprint"], fingerprint) and not cfg.reindex:
        raise IndexFormatError(
            f"{out}: built with another model ({meta['model']['path']}, fingerprint "
            f"{meta['model']['fingerprint'][:12]}); pass --reindex to re-encode it with this one, or use a new --out"
        )
    if meta is not None and (meta["settings"] != settings or cfg.reindex):
        changed = {k: f"{meta['settings'].get(k)} -> {v}" for k, v in settings.items() if meta["settings"].get(k) != v}
        log.warning(
            "%s: re-encoding every video (%s)",
            out,
            ", ".join(f"{k} {v}" for k, v in changed.items()) if changed else "--reindex",
        )
        drop_all(out, meta)
        meta = None
    if meta is None:  # record the model and settings up front so pending chunks can never be mixed with others
        meta = {"format": FORMAT_VERSION, "generation": None, "ann": None, "failed": [], "count": 0}
    meta.update(
        {
            "model": {
                # a local path is made absolute; a hub id / open_clip NAME:TAG / URL is kept as typed
                "path": str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path),
                "source": (getattr(model, "provenance", None) or {}).get("source"),
                "fingerprint": fingerprint,
                "config": model.config.to_dict(),
            },
            "settings": settings,
            "root": str(video_dir),
        }
    )
    atomic_write_json(out / META_NAME, meta)

    rows, emb, chunks = load_state(out, meta, repaired)
    pending_paths = set()
    for pq in chunks:
        pending_paths |= set(pd.read_parquet(pq, columns=["path"])["path"])
    known = {(r.path, int(r.size), int(r.mtime_ns)) for r in rows[["path", "size", "mtime_ns"]].itertuples()}
    report = BuildReport(index=out, repaired=repaired)
    jobs: list[_FileJob] = []
    present: set[str] = set()
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            report.failed.append((str(f), f"cannot stat: {e}"))
            continue
        present.add(str(f))
        if (str(f), st.st_size, st.st_mtime_ns) in known:
            if str(f) in pending_paths:
                report.resumed += 1
            else:
                report.unchanged += 1
        else:
            jobs.append(_FileJob(f, st.st_size, st.st_mtime_ns))
    old_paths = set(rows["path"])
    report.deleted = len(old_paths - present)

    buf_rows: list[dict[str, Any]] = []
    buf_emb: list[np.ndarray] = []

    def flush() -> None:
        if not buf_rows:
            return
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}"
        atomic_save_npy(out / "pending" / f"{name}.npy", np.concatenate(buf_emb), dtype=np.float32)
        atomic_save_parquet(out / "pending" / f"{name}.parquet", pd.DataFrame(buf_rows, columns=rows.columns))
        buf_rows.clear()
        buf_emb.clear()

    def decode(job: _FileJob) -> dict[str, Any]:
        return _decode(job, num_frames, image_size, cfg, out / "thumbs")

    bar = tqdm(total=len(jobs), desc="indexing", unit="video", disable=not progress)
    try:
        for job, fut in _prefetch(jobs, decode, cfg.decode_workers):
            try:
                item = fut.result()
            except Exception as e:  # noqa: BLE001 - any bad file is skipped and listed, never fatal
                report.failed.append((str(job.path), f"{type(e).__name__}: {e}"))
                bar.update(1)
                continue
            with torch.inference_mode():
                e_list = [
                    model.encode_video(torch.stack(item["clips"][i : i + cfg.batch_size]).to(model.device))
                    for i in range(0, len(item["clips"]), cfg.batch_size)
                ]
            buf_emb.append(torch.cat(e_list).cpu().numpy().astype(np.float32))
            buf_rows.extend(item["rows"])
            report.encoded += 1
            bar.update(1)
            if len(buf_rows) >= cfg.chunk_rows:
                flush()
    finally:  # also on KeyboardInterrupt / errors: what was encoded is kept for the next run
        flush()
        bar.close()

    rows, emb, chunks = load_state(out, meta)
    keep = rows["path"].isin(present).to_numpy()
    rows, emb = rows[keep].reset_index(drop=True), emb[keep]
    order = np.lexsort((rows["start"].to_numpy(), rows["path"].to_numpy()))
    rows, emb = rows.iloc[order].reset_index(drop=True), emb[order]
    _commit(out, meta, rows, emb, chunks, report, cfg)
    report.total_rows = len(rows)
    report.total_videos = rows["path"].nunique()
    report.seconds = time.perf_counter() - t0
    return report


def _commit(
    out: Path,
    meta: dict[str, Any],
    rows: pd.DataFrame,
    emb: np.ndarray,
    chunks: list[Path],
    report: BuildReport,
    cfg: IndexConfig,
) -> None:
    """Write generation g+1 (+ ANN), switch index.json to it atomically, then delete what it replaced."""
    old_gen = meta.get("generation")
    gen = (old_gen or 0) + 1
    emb = emb.reshape(len(rows), -1) if len(rows) else np.zeros((0, meta["model"]["config"]["embed_dim"]), np.float32)
    atomic_save_npy(out / f"data-{gen}.npy", emb, dtype=np.float32)
    atomic_save_parquet(out / f"data-{gen}.parquet", rows)
    ann = build_ann(emb, "auto", cfg.ann) if len(rows) else None
    ann_meta = None
    if ann is not None:
        ann_file = f"ann-{gen}.faiss"
        ann.save(out / ann_file)
        ann_meta = {"kind": ann.kind, "knob": ann.knob, "file": ann_file}
        report.ann = ann.kind
    meta.update(
        {
            "generation": gen,
            "ann": ann_meta,
            "count": len(rows),
            "failed": [{"path": p, "error": e} for p, e in report.failed],
        }
    )
    atomic_write_json(out / META_NAME, meta)
    # the new generation is live: remove what it replaced (a crash here only leaves garbage, never a bad index)
    if old_gen is not None:
        for suffix in ("npy", "parquet"):
            (out / f"data-{old_gen}.{suffix}").unlink(missing_ok=True)
        (out / f"ann-{old_gen}.faiss").unlink(missing_ok=True)
    for pq in chunks:
        pq.unlink(missing_ok=True)
        pq.with_suffix(".npy").unlink(missing_ok=True)
    live = set(rows["thumb"].dropna())
    for t in (out / "thumbs").glob("*.jpg"):
        if t.name not in live:
            t.unlink(missing_ok=True)
