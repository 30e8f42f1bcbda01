"""The search web app's API (httpx TestClient) and a bounded loopback load test against a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from support import serve_in_thread

import clipvip
from clipvip.index import IndexConfig, VideoIndex, build_index
from clipvip.video import write_video
from clipvip_apps.web import create_app_from_path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model + an index over 4 generated videos (one long enough for 2 windows)."""
    root = tmp_path_factory.mktemp("web")
    torch.manual_seed(0)
    model = clipvip.CLIPViP(clipvip.tiny_config())
    model.save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    for i, frames in enumerate((8, 8, 8, 32)):
        x = np.repeat(rng.integers(0, 256, (frames, 4, 4, 3), dtype=np.uint8), 8, axis=1).repeat(8, axis=2)
        write_video(root / "videos" / f"v{i}.mp4", x, fps=8)
    build_index(
        root / "videos",
        root / "idx",
        clipvip.load(root / "model"),
        root / "model",
        IndexConfig(window=2.0),
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def client(world):
    return TestClient(create_app_from_path(world / "idx"))


def test_search_matches_brute_force(world, client):
    index = VideoIndex.open(world / "idx")
    model = clipvip.load(world / "model")
    query = "people dancing on a beach"
    r = client.get("/api/search", params={"q": query, "k": 10})
    assert r.status_code == 200
    res = r.json()["results"]
    with torch.inference_mode():
        q = model.encode_text([query])[0].numpy()
    s = np.asarray(index.emb) @ q  # brute force: best row per video, videos ranked by it
    best = {}
    for row, p in enumerate(index.rows["path"]):
        if p not in best or s[row] > s[best[p]]:
            best[p] = row
    expected = sorted(best.values(), key=lambda r: -s[r])
    assert [h["row"] for h in res] == expected
    assert len(res) == 4 and res[0]["name"] == Path(index.rows.at[expected[0], "path"]).name
    np.testing.assert_allclose([h["score"] for h in res], s[expected], atol=1e-5)
    info = client.get("/api/info").json()
    assert info["videos"] == 4 and info["rows"] == 5 and info["windowed"]


def test_similar_thumbs_and_videos(world, client):
    index = VideoIndex.open(world / "idx")
    r = client.get("/api/similar", params={"row": 0, "k": 10}).json()
    own = index.rows.at[0, "path"]
    assert r["results"] and all(index.rows.at[h["row"], "path"] != own for h in r["results"])
    h = r["results"][0]
    t = client.get(h["thumb_url"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg" and t.content[:2] == b"\xff\xd8"
    v = client.get(h["video_url"])
    assert v.status_code == 200 and v.content == Path(index.videos[h["video"]]).read_bytes()
    part = client.get(h["video_url"], headers={"range": "bytes=0-99"})  # seeking in the player needs ranges
    assert part.status_code == 206 and len(part.content) == 100
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/search",  # missing q
        "/api/search?q=",  # empty
        "/api/search?q=%20%20",  # blank
        "/api/search?q=" + "a" * 201,  # over the cap
        "/api/search?q=dog&k=0",
        "/api/search?q=dog&k=101",
        "/api/search?q=dog&k=abc",
        "/api/similar?row=-1",
        "/api/similar?row=99999",
        "/api/similar?row=x",
        "/api/video/4",
        "/api/video/-1",
        "/api/video/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/video/%2Fetc%2Fpasswd",
        "/api/thumb/99",
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/etc/passwd",
    ],
)
def test_bad_requests_get_4xx_and_no_file_outside_the_index(client, url):
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert b"root:" not in r.content and b"create_app" not in r.content


def test_server_survives_bad_requests(client):
    for url in ["/api/search?q=" + "x" * 10_000, "/api/similar?row=" + "9" * 400, "/api/video/" + "1" * 300]:
        assert 400 <= client.get(url).status_code < 500
    assert client.get("/api/search", params={"q": "still up"}).status_code == 200


def test_videos_deleted_after_indexing_are_404(tmp_path):
    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(tmp_path / "m")
    p = write_video(tmp_path / "v" / "a.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    build_index(tmp_path / "v", tmp_path / "idx", clipvip.load(tmp_path / "m"), tmp_path / "m", progress=False)
    c = TestClient(create_app_from_path(tmp_path / "idx"))
    assert c.get("/api/video/0").status_code == 200
    p.unlink()
    assert c.get("/api/video/0").status_code == 404


def test_load_loopback(world):
    """8 concurrent clients x 200 queries against uvicorn on 127.0.0.1: no errors; p95 latency reported."""
    clients, per_client = 8, 200
    latencies: list[float] = []
    errors: list[str] = []

    async def one_client(c: int, http: httpx.AsyncClient) -> None:
        for i in range(per_client):
            q = f"video number {i % 50} from client {c % 4}"  # repeats hit the per-app cache, new ones encode
            t = time.perf_counter()
            try:
                r = await http.get("/api/search", params={"q": q, "k": 10})
                if r.status_code != 200 or not r.json()["results"]:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as e:
                errors.append(repr(e))
            latencies.append((time.perf_counter() - t) * 1e3)

    async def run_all(base_url: str) -> float:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
            t = time.perf_counter()
            await asyncio.gather(*(one_client(c, http) for c in range(clients)))
            return time.perf_counter() - t

    with serve_in_thread(create_app_from_path(world / "idx")) as base_url:
        wall = asyncio.run(asyncio.wait_for(run_all(base_url), timeout=240))
    lat = np.asarray(latencies)
    stats = {
        "clients": clients,
        "queries_per_client": per_client,
        "requests": len(lat),
        "errors": len(errors),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
        "wall_s": wall,
        "requests_per_s": len(lat) / wall,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "web_load.json").write_text(json.dumps(stats, indent=2))
    print(f"\nload test: {stats}")
    assert not errors, errors[:5]
    assert len(lat) == clients * per_client
