"""HD-VILA-100M's published metadata (video id + clip spans) -> the corpus job's inputs. Downloads nothing.

The metadata files (microsoft/XPretrain, ``hd-vila-100m/README.md``) hold one JSON object per line:
``{"video_id": "QMi8x8o55Ns", "url": ..., "clip": [{"clip_id": "QMi8x8o55Ns.1.mp4", "span": ["00:00:17.759",
"00:00:23.279"]}, ...]}``. Users who downloaded the videos themselves (``{video_root}/{video_id}.mp4`` or any video
extension) get the same shards as from raw videos, with the published spans instead of the subtitle rule; the
clip text comes from the video's own subtitles (sidecar, embedded, or ``--asr``), since the metadata has none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipvip.corpus.subtitles import parse_timestamp
from clipvip.io import read_jsonl
from clipvip.video import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Span:
    clip_id: str
    start: float
    end: float


@dataclass(frozen=True)
class SpanVideo:
    video_id: str
    spans: tuple[Span, ...]


def read_hdvila_metadata(path: str | os.PathLike) -> Iterator[SpanVideo]:
    """The videos of one metadata file, in file order (ValueError naming the file and line for a bad row)."""
    for n, row in enumerate(read_jsonl(path), 1):
        vid = row.get("video_id")
        clips = row.get("clip")
        if not vid or not isinstance(clips, list):
            raise ValueError(f"{path}: row {n} needs 'video_id' and a 'clip' list (keys: {sorted(row)})")
        spans = []
        for c in clips:
            try:
                cid = str(c["clip_id"])
                a, b = (parse_timestamp(str(x)) for x in c["span"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: row {n} ({vid}): bad clip {c!r} ({e})") from None
            if b <= a:
                raise ValueError(f"{path}: row {n} ({vid}): clip {cid} ends before it starts")
            spans.append(Span(cid.removesuffix(".mp4"), a, b))
        yield SpanVideo(str(vid), tuple(spans))


def find_video(video_root: str | os.PathLike, video_id: str) -> Path | None:
    """``{video_root}/{video_id}.mp4``, else the first ``{video_id}.*`` with a video extension; None if absent."""
    root = Path(video_root)
    mp4 = root / f"{video_id}.mp4"
    if mp4.is_file():
        return mp4
    for ext in sorted(VIDEO_EXTENSIONS):
        p = root / f"{video_id}{ext}"
        if p.is_file():
            return p
    return None
