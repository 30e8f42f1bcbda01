"""Playing what a browser cannot: ``/api/media`` picks direct / transcode / strip, ``/api/play`` converts the matched
window of an XviD AVI (the real file in ../shared/fixtures) to H.264 in fragmented MP4, cached and bounded;
``/api/strip`` is the fallback. Checked against PyAV's own decode of the source, not against our reader."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import clipvip
from clipvip.index import IndexConfig, VideoIndex, build_index
from clipvip.video import write_video
from clipvip.video.playback import TranscodeLimits
from clipvip_apps.web import WebConfig, create_app_from_path
from clipvip_apps.web.media import MediaConfig

AVI = "mmaction2_test.avi"  # XviD (mpeg4) in AVI, 320x240, 25 fps, 6.56 s


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fixtures = __import__("conftest").FIXTURES
    if not (fixtures / "videos" / AVI).is_file():
        pytest.skip("../shared/fixtures is not present")
    root = tmp_path_factory.mktemp("media")
    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(root / "model")
    (root / "videos").mkdir()
    os.symlink(fixtures / "videos" / AVI, root / "videos" / AVI)
    rng = np.random.default_rng(0)
    x = np.repeat(rng.integers(0, 256, (16, 4, 4, 3), dtype=np.uint8), 8, axis=1).repeat(8, axis=2)
    write_video(root / "videos" / "plain.mp4", x, fps=8)
    build_index(root / "videos", root / "idx", clipvip.load(root / "model"), root / "model", IndexConfig(window=2.0))
    return root


def _client(world, tmp_path, **limits) -> TestClient:
    media = MediaConfig(transcode_dir=tmp_path / "tc", limits=TranscodeLimits(**limits))
    return TestClient(create_app_from_path(world / "idx", cfg=WebConfig(media=media)))


def _video_number(world, name: str) -> int:
    return next(i for i, p in enumerate(VideoIndex.open(world / "idx").videos) if p.endswith(name))


def _decode(data: bytes) -> tuple[str, list[np.ndarray], list[float]]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in c.decode(s)]
        return s.codec_context.name, [f for f, _ in frames], [t for _, t in frames]


def _source_frame(path, at: float) -> np.ndarray:
    """The source frame shown at ``at`` seconds, decoded by PyAV from the start (no seeking, display order)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for n, f in enumerate(c.decode(s)):
            if n / float(s.average_rate) >= at - 1e-6:
                return f.to_ndarray(format="rgb24")
    raise AssertionError("past the end")


def test_avi_window_is_transcoded_to_h264_and_cached(world, tmp_path):
    client = _client(world, tmp_path)
    v = _video_number(world, AVI)
    media = client.get(f"/api/media/{v}", params={"start": 2.0, "end": 4.0}).json()
    assert media["mode"] == "transcode" and media["start"] == 0.0
    assert "mpeg4 in .avi does not play in browsers" in media["note"]
    r = client.get(media["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    codec, frames, times = _decode(r.content)
    assert codec == "h264" and frames[0].shape == (240, 320, 3)
    assert 48 <= len(frames) <= 50 and times[-1] - times[0] == pytest.approx(1.96, abs=0.1)  # 2 s at 25 fps
    # the copy shows the window, not the start of the file: its frame k is the source's frame at 2 s + k / 25, give
    # or take one frame (AVI's packed B-frames mislabel the time of the frame a seek lands on)
    src = world / "videos" / AVI
    for k in (0, 25, 45):
        diff = min(np.abs(frames[k].astype(int) - _source_frame(src, 2.0 + (k + j) / 25)).mean() for j in (-1, 0, 1))
        other = np.abs(frames[k].astype(int) - _source_frame(src, 0.0)).mean()
        assert diff < 8 and diff < other / 2, (k, diff, other)
    cached = list((tmp_path / "tc").iterdir())
    assert len(cached) == 1
    assert client.get(media["url"]).content == r.content and list((tmp_path / "tc").iterdir()) == cached


def test_bounds_length_cache_size_and_time(world, tmp_path):
    client = _client(world, tmp_path, max_seconds=1.0, cache_bytes=1)
    v = _video_number(world, AVI)
    media = client.get(f"/api/media/{v}", params={"start": 1.0, "end": 6.0}).json()
    assert "1.0-2.0 s" in media["note"]  # cut to max_seconds
    _, frames, _ = _decode(client.get(media["url"]).content)
    assert 24 <= len(frames) <= 25
    client.get(f"/api/play/{v}", params={"start": 3.0, "end": 4.0})
    assert len(list((tmp_path / "tc").iterdir())) == 1  # the older window was evicted
    slow = _client(world, tmp_path / "slow", timeout=0.0)
    r = slow.get(f"/api/play/{v}", params={"start": 0.0, "end": 2.0})
    assert r.status_code == 415 and "took over" in r.json()["detail"]
    assert not (tmp_path / "slow" / "tc").exists() or not list((tmp_path / "slow" / "tc").iterdir())


def test_playable_file_direct_and_strip_fallback(world, tmp_path, monkeypatch):
    client = _client(world, tmp_path)
    mp4 = _video_number(world, "plain.mp4")
    media = client.get(f"/api/media/{mp4}", params={"start": 0.0}).json()
    assert media["mode"] == "direct" and media["url"] == f"/api/video/{mp4}" and media["note"] is None
    monkeypatch.setattr("clipvip_apps.web.media.available_encoder", lambda: None)
    avi = _video_number(world, AVI)
    media = client.get(f"/api/media/{avi}", params={"start": 2.0, "end": 4.0}).json()
    assert media["mode"] == "strip" and "no H.264/VP8/VP9 encoder" in media["note"]
    r = client.get(media["strip_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (6 * 120, 120)
    assert client.get("/api/media/99").status_code == 404
    assert client.get("/api/play/-1").status_code == 404


def test_info_names_the_model_source(world, tmp_path):
    info = _client(world, tmp_path).get("/api/info").json()
    src = info["model_source"]
    assert src["spec"] == str((world / "model").resolve())
    assert src["fingerprint"] == VideoIndex.open(world / "idx").meta["model"]["fingerprint"]
