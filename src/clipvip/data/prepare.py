"""``clipvip prepare``: re-encode a benchmark's videos to the fixed frame rate and size its readers expect.

WHY: the published numbers were measured on re-encoded copies (see ``clipvip.video.transcode``), and a 12-frame
sample of a 6-fps copy decodes a fraction of the frames of a 30-fps download. This is a ``clipvip.jobs`` parts job:
the sorted source list is cut into parts of ``part_size`` videos; a part writes each output atomically, then a
done-marker (``.prepare/<plan>/part-NNNNN.json`` with its stats); a rerun skips finished parts and, inside a
re-planned part, videos whose output exists. A video that cannot be read is skipped, counted and named in the
part's stats (and in ``prepared.json``), never the end of the job.

Layout: ``OUT/<path of the source relative to the input folder, suffix .mp4>`` (``msrvtt/video7.mp4`` ->
``OUT/msrvtt/video7.mp4``), plus ``OUT/prepared.json`` (settings, counts, failures) once every part is done. The
eval presets read that layout: the official path template with the extension ``.mp4``
(``clipvip.eval.presets.prepared_template``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipvip.io import atomic_write_json
from clipvip.video.read import VIDEO_EXTENSIONS
from clipvip.video.transcode import TranscodeError, transcode

MANIFEST = "prepared.json"
STATE_DIR = ".prepare"


@dataclass(frozen=True)
class PreparePreset:
    """A benchmark's re-encoding settings and where they come from (``source``: file in the official release, or
    a statement that the release does not say)."""

    name: str
    fps: float | None  # None: keep the source rate
    short_side: int | None  # None: keep the size
    source: str


_XP = "microsoft/XPretrain"
PREPARE_PRESETS: dict[str, PreparePreset] = {
    p.name: p
    for p in (
        PreparePreset(
            "msrvtt",
            6,
            None,
            f"{_XP}: hd-vila/scripts/process_raw_video/compress_video.py (ffmpeg -r 6, size kept); the CLIP-ViP "
            "configs CLIP-ViP/src/configs/msrvtt_retrieval/msrvtt_retrieval_vip_base_{32,16}.json read 'videos_6fps'",
        ),
        PreparePreset(
            "didemo",
            6,
            None,
            f"{_XP}: CLIP-ViP/src/configs/didemo_retrieval/*.json read 'didemo_video_xfps'; the release does not say "
            "the rate or size: 6 fps (as MSR-VTT) and size kept are assumed here",
        ),
        PreparePreset(
            "lsmdc",
            None,
            None,
            f"{_XP}: CLIP-ViP/src/configs/lsmdc_retrieval/*.json read the original clips ('datasets/lsmdc', .avi): "
            "no re-encoding in the release; here rate and size are kept, only the container becomes mp4/H.264",
        ),
        PreparePreset(
            "activitynet",
            6,
            180,
            f"{_XP}: CLIP-ViP/src/configs/actnet_retrieval/*.json read JPEG frames 'video_frames_lr', written by "
            "hd-vila/scripts/process_raw_video/decode_frames.py at 6 fps (at least 20 per video) resized to 288x180; "
            "here a 6-fps video with short side 180 (aspect kept rather than forced to 288x180)",
        ),
        PreparePreset(
            "msvd",
            3,
            224,
            "MSVD is not in the CLIP-ViP release; CLIP4Clip's ArrowLuo/CLIP4Clip: preprocess/compress_video.py "
            "(ffmpeg -r 3, short side 224) is used",
        ),
        PreparePreset(
            "clip4clip",
            3,
            224,
            "ArrowLuo/CLIP4Clip: preprocess/compress_video.py (ffmpeg -r 3, short side scaled to 224, video only)",
        ),
    )
}


def get_prepare_preset(name: str) -> PreparePreset:
    try:
        return PREPARE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown prepare preset {name!r}; choose one of {sorted(PREPARE_PRESETS)}") from None


def list_videos(root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[str]:
    """Video files under ``root`` (recursive, by extension), as sorted paths relative to ``root``; the folder
    ``exclude`` (an output folder inside ``root``) is not entered."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found")
    skip = Path(exclude).resolve() if exclude is not None else None
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or Path(dirpath, d).resolve() != skip)
        )
        for f in files:
            if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def output_name(rel: str) -> str:
    """The prepared file for a source path relative to the input folder: same folders and stem, suffix .mp4."""
    return str(Path(rel).with_suffix(".mp4"))


@dataclass
class PrepareJob:
    """Re-encode ``sources`` (relative to ``src_root``) into ``out``; a ``clipvip.jobs.PartsJob``."""

    src_root: str
    out: str
    sources: list[str]
    fps: float | None
    short_side: int | None
    part_size: int = 64
    workers: int = 1  # videos re-encoded at once inside a part (threads; PyAV releases the GIL while coding)
    crf: int = 23
    preset: str = "veryfast"
    num_parts: int = field(init=False)
    plan_hash: str = field(init=False)  # ``plan_id()``, hashed once: markers are looked up per part

    def __post_init__(self) -> None:
        if self.part_size < 1 or self.workers < 1:
            raise ValueError("part_size and workers must be >= 1")
        self.num_parts = (len(self.sources) + self.part_size - 1) // self.part_size
        self.plan_hash = self.plan_id()

    def settings(self) -> dict[str, Any]:
        return {"fps": self.fps, "short_side": self.short_side, "crf": self.crf, "x264_preset": self.preset}

    def plan_id(self) -> str:
        """Same sources, settings and part size -> same id, so markers of another plan are never trusted."""
        h = hashlib.sha256(json.dumps([self.sources, self.settings(), self.part_size]).encode())
        return h.hexdigest()[:12]

    def marker(self, part: int) -> Path:
        return Path(self.out) / STATE_DIR / self.plan_hash / f"part-{part:05d}.json"

    def is_done(self, part: int) -> bool:
        return self.marker(part).is_file()

    def part_sources(self, part: int) -> list[str]:
        return self.sources[part * self.part_size : (part + 1) * self.part_size]

    def _one(self, rel: str) -> tuple[str, str | None, float]:
        """(rel, failure reason or None, output seconds) for one source; an existing output is kept."""
        dst = Path(self.out) / output_name(rel)
        if dst.is_file():
            return rel, None, -1.0
        try:
            r = transcode(
                Path(self.src_root) / rel,
                dst,
                self.fps,
                self.short_side,
                crf=self.crf,
                preset=self.preset,
                threads=1,
            )
        except TranscodeError as e:
            return rel, e.reason, 0.0
        return rel, None, r.duration

    def run_part(self, part: int) -> dict[str, Any]:
        rels = self.part_sources(part)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = list(pool.map(self._one, rels))
        stats: dict[str, Any] = {
            "part": part,
            "written": sum(1 for _, err, d in results if err is None and d >= 0),
            "existing": sum(1 for _, err, d in results if err is None and d < 0),
            "failed": [{"path": str(Path(self.src_root) / rel), "reason": err} for rel, err, _ in results if err],
            "seconds_of_video": round(sum(d for _, err, d in results if err is None and d > 0), 3),
        }
        self.marker(part).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.marker(part), stats)
        return stats

    def part_stats(self) -> list[dict[str, Any]] | None:
        """Every part's stats from its marker, or None while any part is unfinished."""
        out = []
        for p in range(self.num_parts):
            m = self.marker(p)
            if not m.is_file():
                return None
            out.append(json.loads(m.read_text(encoding="utf-8")))
        return out

    def write_manifest(self, preset: str | None = None) -> Path | None:
        """``OUT/prepared.json`` once all parts are done (any worker may write it; the content is the same)."""
        stats = self.part_stats()
        if stats is None:
            return None
        failed = [f for s in stats for f in s["failed"]]
        manifest = {
            "preset": preset,
            **self.settings(),
            "source_root": str(Path(self.src_root).resolve()),
            "videos": len(self.sources),
            "prepared": len(self.sources) - len(failed),
            "failed": failed,
            "layout": "<out>/<source path relative to source_root, suffix .mp4>",
        }
        return atomic_write_json(Path(self.out) / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``prepared.json`` of a prepared folder, or None when ``folder`` was not written by ``clipvip prepare``."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object")
    return data


def make_job(
    videos: str | os.PathLike,
    out: str | os.PathLike,
    fps: float | None,
    short_side: int | None,
    *,
    sources: Sequence[str] | None = None,
    **options: Any,
) -> PrepareJob:
    """A ``PrepareJob`` over every video under ``videos`` (or the given relative ``sources``)."""
    if Path(out).resolve() == Path(videos).resolve():
        raise ValueError(f"{out}: --out must differ from the video folder (outputs would replace the sources)")
    srcs = list(sources) if sources is not None else list_videos(videos, exclude=out)
    if not srcs:
        raise ValueError(f"{videos}: no video files found (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return PrepareJob(os.fspath(videos), os.fspath(out), srcs, fps, short_side, **options)
