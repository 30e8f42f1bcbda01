"""``clipvip serve``: a small search page over a video index (FastAPI + one plain HTML/JS page, no build step).

Safety rules, and why: the server binds 127.0.0.1 by default (it serves the user's own files); files are only ever
addressed by their number in the index (``/api/video/{n}``, ``/api/thumb/{row}``), never by a path from the
request, so no request can reach a file outside the index (no path traversal by construction); queries are capped
in length (the text tower truncates anyway, but unbounded input costs tokenizer time); bad parameters get a 4xx
JSON answer and every other error a 500 JSON answer, so the process stays up.
"""

from __future__ import annotations

import mimetypes
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from clipvip.index import Hit, VideoIndex
from clipvip_apps.web.media import MediaConfig, add_media_routes

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class WebConfig:
    max_query_chars: int = 200
    max_k: int = 100
    default_k: int = 24
    cache_size: int = 1024  # text embeddings of recent queries (a search box repeats itself a lot)
    media: MediaConfig = field(default_factory=MediaConfig)  # playing what browsers cannot: see web/media.py


class _LRU:
    """A small thread-safe LRU of query -> embedding (per app, not global)."""

    def __init__(self, size: int) -> None:
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


MAX_ECHO_CHARS = 64  # of a rejected value, in a 422 answer: a 100 kB query is not sent back whole


def _capped_error(err: dict[str, Any]) -> dict[str, Any]:
    """One validation error with the rejected input cut to ``MAX_ECHO_CHARS`` (FastAPI echoes it whole)."""
    out = {k: v for k, v in err.items() if k in ("type", "loc", "msg", "ctx")}
    if "ctx" in out:
        out["ctx"] = {
            k: v if isinstance(v, (int, float, bool)) else str(v)[:MAX_ECHO_CHARS] for k, v in out["ctx"].items()
        }
    if "input" in err:
        text = err["input"] if isinstance(err["input"], str) else repr(err["input"])
        out["input"] = text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."
        if len(text) > MAX_ECHO_CHARS:
            out["input_chars"] = len(text)
    return out


def create_app(
    index: VideoIndex, encode_text: Callable[[str], np.ndarray], cfg: WebConfig | None = None, model_name: str = ""
) -> FastAPI:
    """The app over an opened index. ``encode_text``: query string -> L2-normalised embedding [E] (normally the
    index's own model; see ``create_app_from_path``). ``/api/info`` names the model by its source (hub id, file),
    as recorded in the index, and its weights fingerprint."""
    cfg = cfg or WebConfig()
    app = FastAPI(title="clipvip search", docs_url=None, redoc_url=None, openapi_url=None)
    cache = _LRU(cfg.cache_size)
    root = Path(index.meta.get("root", "/"))
    windowed = index.meta["settings"]["window"] is not None

    def display_name(path: str) -> str:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return Path(path).name

    def hit_json(h: Hit) -> dict[str, Any]:
        return {
            "rank": h.rank,
            "row": h.row,
            "video": h.video,
            "name": display_name(h.path),
            "score": h.score,
            "start": h.start,
            "end": h.end,
            "duration": h.duration,
            "thumb_url": f"/api/thumb/{h.row}" if h.thumb else None,
            "video_url": f"/api/video/{h.video}",
        }

    def embed(q: str) -> np.ndarray:
        e = cache.get(q)
        if e is None:
            e = np.asarray(encode_text(q), dtype=np.float32).reshape(-1)
            cache.put(q, e)
        return e

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_capped_error(e) for e in exc.errors()]}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "videos": len(index.videos),
            "rows": len(index),
            "search": index.ann.kind if index.ann else "exact",
            "windowed": windowed,
            "model": model_name,
            "model_source": model_source(index.meta["model"]),
            "max_query_chars": cfg.max_query_chars,
            "max_k": cfg.max_k,
            "default_k": cfg.default_k,
        }

    @app.get("/api/search")
    def search(
        q: str = Query(..., min_length=1, max_length=cfg.max_query_chars),
        k: int = Query(cfg.default_k, ge=1, le=cfg.max_k),
    ) -> dict[str, Any]:
        query = q.strip()
        if not query:
            raise HTTPException(422, "empty query")
        hits = index.search(embed(query), k)
        return {"query": query, "mode": "text", "results": [hit_json(h) for h in hits]}

    @app.get("/api/similar")
    def similar(row: int = Query(..., ge=0), k: int = Query(cfg.default_k, ge=1, le=cfg.max_k)) -> dict[str, Any]:
        if row >= len(index):
            raise HTTPException(404, f"no row {row} in the index")
        hits = index.similar(row, k)
        return {
            "query": display_name(index.rows.at[row, "path"]),
            "mode": "video",
            "row": row,
            "results": [hit_json(h) for h in hits],
        }

    @app.get("/api/thumb/{row}")
    def thumb(row: int) -> FileResponse:
        p = index.thumb_path(row) if 0 <= row < len(index) else None
        if p is None or not p.is_file():
            raise HTTPException(404, "no such thumbnail")
        return FileResponse(p, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})

    def file_of(video: int) -> Path:
        if not 0 <= video < len(index.videos):
            raise HTTPException(404, "no such video in the index")
        p = Path(index.videos[video])
        if not p.is_file():
            raise HTTPException(404, "the indexed file is gone; re-run `clipvip index`")
        return p

    @app.get("/api/video/{video}")
    def video(video: int) -> FileResponse:
        p = file_of(video)
        media = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return FileResponse(p, media_type=media)

    add_media_routes(app, file_of, cfg.media)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def model_source(meta: dict[str, Any]) -> dict[str, Any]:
    """What an index says about its model: the spec it was built with (a path, ``org/name``, ``ViT-B-32:openai``,
    a URL), the checkpoint that model was converted from when it was, and the weights fingerprint."""
    origin = meta.get("source") or {}
    return {
        "spec": meta.get("path"),
        "origin": origin.get("describe") or origin.get("spec"),
        "origin_kind": origin.get("kind"),
        "fingerprint": meta.get("fingerprint"),
    }


def create_app_from_path(
    index_path: str | Path, model_path: str | Path | None = None, cfg: WebConfig | None = None
) -> FastAPI:
    """Open the index and its model (fingerprint-checked) and build the app."""
    import torch

    from clipvip.index import load_index_model

    index = VideoIndex.open(index_path)
    model = load_index_model(index, model_path)
    lock = threading.Lock()

    def encode_text(q: str) -> np.ndarray:
        with lock, torch.inference_mode():  # one forward at a time: CPU threads are already used by torch
            return model.encode_text([q])[0].cpu().numpy()

    return create_app(index, encode_text, cfg, model_name=Path(index.meta["model"]["path"]).name)
