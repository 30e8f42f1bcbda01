"""Playing any indexed video in the page: the original file when a browser plays it, else a transcoded copy of the
matched window (``clipvip.video.playback``), else a strip of frames with the reason.

``GET /api/media/{video}?start=&end=`` tells the page which of the three to use (a JSON answer, so the page can
say *why* it shows a copy or a strip); ``/api/play/{video}`` serves the transcoded window and ``/api/strip/{video}``
the frame strip. Videos are addressed by their number in the index only, like every other route.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response

from clipvip.video.playback import (
    PlaybackError,
    TranscodeCache,
    TranscodeLimits,
    available_encoder,
    browser_playable,
)


def default_transcode_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipvip" / "transcode"


@dataclass
class MediaConfig:
    transcode_dir: Path = field(default_factory=default_transcode_dir)
    limits: TranscodeLimits = field(default_factory=TranscodeLimits)
    strip_frames: int = 6
    strip_height: int = 120


def add_media_routes(app: FastAPI, file_of: Callable[[int], Path], cfg: MediaConfig) -> None:
    """Register the three routes on ``app``; ``file_of(video)`` is the app's own checked video -> path lookup."""
    cache = TranscodeCache(cfg.transcode_dir, cfg.limits)
    playable: dict[int, tuple[bool, str]] = {}  # per video: probing opens the file, once

    def query_window(start: float, end: float | None) -> str:
        return f"start={start:g}" + (f"&end={end:g}" if end is not None else "")

    @app.get("/api/media/{video}")
    def media(video: int, start: float = Query(0.0, ge=0), end: float | None = Query(None, ge=0)) -> dict[str, Any]:
        path = file_of(video)
        if video not in playable:
            playable[video] = browser_playable(path)
        ok, what = playable[video]
        strip_url = f"/api/strip/{video}?{query_window(start, end)}"
        if ok:
            return {
                "mode": "direct",
                "url": f"/api/video/{video}",
                "start": start,
                "note": None,
                "strip_url": strip_url,
            }
        if available_encoder() is None:
            note = f"{what}, and this server has no H.264/VP8/VP9 encoder: showing frames instead"
            return {"mode": "strip", "url": None, "start": 0.0, "note": note, "strip_url": strip_url}
        s, e = cache.window(start, end)
        return {
            "mode": "transcode",
            "url": f"/api/play/{video}?{query_window(s, e)}",
            "start": 0.0,  # the copy starts at the window's start
            "note": f"{what}: playing a converted copy of {s:.1f}-{e:.1f} s",
            "strip_url": strip_url,
        }

    @app.get("/api/play/{video}")
    def play(video: int, start: float = Query(0.0, ge=0), end: float | None = Query(None, ge=0)) -> FileResponse:
        path = file_of(video)
        try:
            out, mime = cache.get(path, start, end)
        except PlaybackError as e:
            raise HTTPException(415, f"cannot convert {path.name}: {e}") from e
        return FileResponse(out, media_type=mime, headers={"cache-control": "max-age=3600"})

    @app.get("/api/strip/{video}")
    def strip(video: int, start: float = Query(0.0, ge=0), end: float | None = Query(None, ge=0)) -> Response:
        from PIL import Image

        from clipvip.video import VideoDecodeError, read_frames

        path = file_of(video)
        try:
            vf = read_frames(path, cfg.strip_frames, cfg.strip_height, start=start, end=end, resize="crop")
        except VideoDecodeError as e:
            raise HTTPException(415, f"cannot read {path.name}: {e.reason}") from e
        frames = vf.frames.permute(0, 2, 3, 1).numpy()  # [T, H, W, 3]
        buf = io.BytesIO()
        Image.fromarray(frames.transpose(1, 0, 2, 3).reshape(frames.shape[1], -1, 3)).save(buf, "JPEG", quality=80)
        return Response(buf.getvalue(), media_type="image/jpeg")
