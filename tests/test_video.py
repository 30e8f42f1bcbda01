"""Frame reading: right frames (checked against the frames we encoded), many codecs/containers, bad files."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from clipvip.video import (
    DecodedFrames,
    FrameRequest,
    PyAVDecoder,
    VideoDecodeError,
    VideoDecoder,
    VideoInfo,
    normalize,
    probe,
    read_frames,
    read_middle_frame,
    sample_indices,
    write_video,
)

QUIET = {"x265-params": "log-level=none"}


def make_frames(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Distinct, compression-friendly frames: random 4x4 colour blocks upscaled (low frequency)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
    return np.ascontiguousarray(small.repeat(h // 4, axis=1).repeat(w // 4, axis=2))


def identify(decoded: torch.Tensor, originals: np.ndarray) -> list[int]:
    """Index of the nearest original frame (MSE) for each decoded frame [T, 3, H, W] (same size)."""
    ref = torch.from_numpy(originals).permute(0, 3, 1, 2).float()
    d = ((decoded.float()[:, None] - ref[None]) ** 2).mean(dim=(2, 3, 4))
    return d.argmin(dim=1).tolist()


def official_uniform(n: int, t: int) -> list[int]:
    # brute-force restatement of np.linspace(0, n - 1, t).astype(int)
    return [int((n - 1) * i / (t - 1)) if t > 1 else 0 for i in range(t)]


# -------------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n,t", [(100, 12), (12, 12), (5, 12), (1, 4), (280, 12), (7, 1)])
def test_uniform_indices_match_official_formula(n: int, t: int) -> None:
    assert sample_indices(n, t).tolist() == official_uniform(n, t)


def test_random_indices_follow_official_jitter() -> None:
    rng = np.random.default_rng(0)
    n, t = 100, 12
    interval = n // (t - 1)
    starts, ends = set(), set()
    for _ in range(300):
        idx = sample_indices(n, t, "random", rng)
        assert len(idx) == t and (np.diff(idx) >= 0).all()
        assert 0 <= idx[0] <= interval and n - 1 - interval <= idx[-1] <= n - 1
        starts.add(int(idx[0]))
        ends.add(int(idx[-1]))
    assert len(starts) > 3 and len(ends) > 3  # really random
    same = sample_indices(n, t, "random", np.random.default_rng(5))
    assert (same == sample_indices(n, t, "random", np.random.default_rng(5))).all()
    assert sample_indices(3, 8, "random", rng).max() <= 2


# ------------------------------------------------------------------------------------------- codecs / files

CODECS = [
    ("h264.mp4", "libx264", "yuv420p", {"g": "5"}),  # short GOPs + B-frames: the seeking path is exercised
    ("mpeg4.avi", "mpeg4", "yuv420p", {"qscale": "2", "g": "6", "bf": "2"}),
    ("h264.mkv", "libx264", "yuv420p", {"g": "4"}),
    ("vp9.webm", "libvpx-vp9", "yuv420p", {"crf": "10", "b": "0", "g": "5"}),
    ("h264.mov", "libx264", "yuv420p", {"g": "7"}),
    ("hevc.mp4", "libx265", "yuv420p", {**QUIET, "crf": "12"}),
    ("h264_10bit.mp4", "libx264", "yuv420p10le", {"g": "5"}),
    ("hevc_10bit.mkv", "libx265", "yuv420p10le", {**QUIET, "crf": "12"}),
]


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    return make_frames(30)


@pytest.mark.parametrize("name,codec,pix_fmt,opts", CODECS, ids=[c[0] for c in CODECS])
def test_reads_the_right_frames(tmp_path, clip_frames, name, codec, pix_fmt, opts) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg build")
    path = write_video(tmp_path / name, clip_frames, fps=10, codec=codec, pix_fmt=pix_fmt, options=opts)
    out = read_frames(path, num_frames=8, size=64)
    assert out.frames.dtype == torch.uint8 and out.frames.shape == (8, 3, 64, 64)
    expected = official_uniform(30, 8)
    assert identify(out.frames, clip_frames) == expected
    assert out.timestamps == pytest.approx([i / 10 for i in expected], abs=1e-3)
    ref = torch.from_numpy(clip_frames[expected]).permute(0, 3, 1, 2).float()
    assert (out.frames.float() - ref).abs().mean() < 6  # same pixels up to codec loss
    assert out.duration == pytest.approx(3.0, abs=0.15)
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (30, 64, 64)
    assert info.fps == pytest.approx(10, rel=0.01)
    # random sampling returns real frames at the sampled indices
    rnd = read_frames(path, num_frames=6, size=64, mode="random", rng=np.random.default_rng(1))
    want = sample_indices(30, 6, "random", np.random.default_rng(1)).tolist()
    assert identify(rnd.frames, clip_frames) == want
    mid = read_middle_frame(path, size=64)
    assert mid.shape == (1, 3, 64, 64) and identify(mid, clip_frames) == [15]


def test_av1_if_available(tmp_path, clip_frames) -> None:
    if "libsvtav1" not in av.codecs_available and "libaom-av1" not in av.codecs_available:
        pytest.skip("no AV1 encoder")
    codec = "libsvtav1" if "libsvtav1" in av.codecs_available else "libaom-av1"
    path = write_video(tmp_path / "av1.mkv", clip_frames[:12], fps=10, codec=codec, options={"crf": "10"})
    out = read_frames(path, num_frames=4, size=64)
    assert identify(out.frames, clip_frames[:12]) == official_uniform(12, 4)


def test_shorter_than_t_repeats(tmp_path, clip_frames) -> None:
    path = write_video(tmp_path / "short.mp4", clip_frames[:3], fps=10)
    out = read_frames(path, num_frames=8, size=64)
    assert identify(out.frames, clip_frames[:3]) == official_uniform(3, 8)
    one = write_video(tmp_path / "one.mp4", clip_frames[:1], fps=10)
    assert identify(read_frames(one, num_frames=4, size=64).frames, clip_frames[:1]) == [0, 0, 0, 0]


def test_variable_frame_rate_uses_real_timestamps(tmp_path, clip_frames) -> None:
    ts = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0, 1.7, 1.75, 2.0]
    path = write_video(tmp_path / "vfr.mp4", clip_frames[:10], fps=10, timestamps=ts)
    out = read_frames(path, num_frames=4, size=64)
    expected = official_uniform(10, 4)
    assert identify(out.frames, clip_frames[:10]) == expected
    assert out.timestamps == pytest.approx([ts[i] for i in expected], abs=2e-3)
    assert probe(path).num_frames == 10
    # a window: only frames whose timestamps lie in [0.5, 1.0]
    win = read_frames(path, num_frames=3, size=64, start=0.5, end=1.0)
    assert identify(win.frames, clip_frames[:10]) == [3, 4, 6]
    assert all(0.5 - 1e-3 <= t <= 1.0 + 1e-3 for t in win.timestamps)
    with pytest.raises(VideoDecodeError, match="window"):
        read_frames(path, start=5.0, end=6.0)


def test_rotation_metadata_is_applied(tmp_path) -> None:
    frames = make_frames(6, h=32, w=64)  # landscape, stored with a 90 degree display rotation
    path = write_video(tmp_path / "rot.mp4", frames, fps=10, rotation=90)
    out = read_frames(path, num_frames=2, size=32, resize="crop")
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    # displayed = frames rotated 90 degrees counter-clockwise (portrait 64 x 32), then the centre 32 x 32 crop
    disp = np.rot90(frames[[0, 5]], k=1, axes=(1, 2))[:, 16:48, :, :]
    ref = torch.from_numpy(np.ascontiguousarray(disp)).permute(0, 3, 1, 2).float()
    err = (out.frames.float() - ref).abs().mean()
    unrotated = torch.from_numpy(np.ascontiguousarray(frames[[0, 5], :, 16:48])).permute(0, 3, 1, 2).float()
    assert err < 6 and err < (out.frames.float() - unrotated).abs().mean()


def test_crop_vs_squash(tmp_path) -> None:
    frames = np.zeros((4, 32, 96, 3), np.uint8)
    frames[:, :, :32] = (255, 0, 0)  # red left third, green middle, blue right third
    frames[:, :, 32:64] = (0, 255, 0)
    frames[:, :, 64:] = (0, 0, 255)
    path = write_video(tmp_path / "wide.mp4", frames, fps=10)
    crop = read_frames(path, num_frames=1, size=32, resize="crop").frames[0].float()
    assert crop[1].mean() > 200 and crop[0].mean() < 40 and crop[2].mean() < 40  # only the green centre
    squash = read_frames(path, num_frames=1, size=32, resize="squash").frames[0].float()
    assert squash[0, :, :8].mean() > 200 and squash[2, :, -8:].mean() > 200  # everything, squeezed


def test_several_video_streams_pick_largest(tmp_path) -> None:
    small, big = make_frames(5, 32, 32, seed=1), make_frames(5, 64, 64, seed=2)
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as c:
        streams = []
        for arr in (small, big):
            s = c.add_stream("libx264", rate=Fraction(10))
            s.width, s.height, s.pix_fmt, s.options = arr.shape[2], arr.shape[1], "yuv420p", {"crf": "10"}
            streams.append(s)
        for i in range(5):
            for s, arr in zip(streams, (small, big)):
                for p in s.encode(av.VideoFrame.from_ndarray(arr[i], format="rgb24")):
                    c.mux(p)
        for s in streams:
            for p in s.encode():
                c.mux(p)
    out = read_frames(path, num_frames=5, size=64)
    assert identify(out.frames, big) == [0, 1, 2, 3, 4]
    assert probe(path).width == 64


# ------------------------------------------------------------------------------------------------ images


def test_images_read_as_one_frame(tmp_path) -> None:
    from PIL import Image

    rgb = make_frames(1, 32, 48)[0]
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "alpha.png")
    Image.fromarray(rgb).save(tmp_path / "b.JPG", quality=95)
    for name in ["a.png", "alpha.png", "b.JPG"]:
        out = read_frames(tmp_path / name, num_frames=12, size=32, resize="squash")
        assert out.frames.shape == (1, 3, 32, 32) and out.timestamps == [0.0]
    gray = read_frames(tmp_path / "gray.png", size=32).frames[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # same scaler for images and videos: a PNG and a lossless-ish video of the same picture agree
    vid = write_video(tmp_path / "v.mp4", np.repeat(rgb[None], 2, 0), fps=10, pix_fmt="yuv444p", options={"crf": "0"})
    a, b = read_middle_frame(tmp_path / "a.png", size=32).float(), read_middle_frame(vid, size=32).float()
    assert (a - b).abs().mean() < 4
    info = probe(tmp_path / "a.png")
    assert (info.num_frames, info.width, info.height) == (1, 48, 32)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(VideoDecodeError, match="bad.jpg"):
        read_frames(tmp_path / "bad.jpg")
    with pytest.raises(VideoDecodeError, match="bad.jpg"):
        probe(tmp_path / "bad.jpg")


def test_probe_opens_an_image_once(tmp_path, monkeypatch) -> None:
    """probe validates an image by decoding it, and takes its size from that same open."""
    from PIL import Image

    Image.fromarray(make_frames(1, 32, 48)[0]).save(tmp_path / "a.png")
    opened: list[object] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    info = probe(tmp_path / "a.png")
    assert (info.num_frames, info.width, info.height, info.codec) == (1, 48, 32, "image")
    assert len(opened) == 1


# -------------------------------------------------------------------------------------------- bad files


def test_bad_files_raise_naming_the_file(tmp_path, clip_frames) -> None:
    good = write_video(tmp_path / "good.mp4", clip_frames, fps=10)
    data = good.read_bytes()
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "garbage.mp4": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "truncated.mp4": data[: len(data) // 3],  # moov atom at the end: unreadable
        "audio_only.txt.mp4": b"just some text\n" * 100,
    }
    for name, payload in cases.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
        with pytest.raises(VideoDecodeError) as ei:
            read_frames(tmp_path / name, num_frames=4, size=32)
        assert name in str(ei.value) and ei.value.reason
        err = pickle.loads(pickle.dumps(ei.value))  # crosses DataLoader worker processes intact
        assert err.path == ei.value.path and err.reason == ei.value.reason
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        read_frames(tmp_path)
    wav = tmp_path / "audio.wav"  # a real media file without any video stream
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        read_frames(wav)


def test_truncated_stream_returns_real_frames_or_raises(tmp_path, clip_frames) -> None:
    """An MPEG-TS / AVI cut mid-stream: either real frames from the part that survived, or an error."""
    for name, codec in [("cut.ts", "libx264"), ("cut.avi", "mpeg4")]:
        full = write_video(tmp_path / f"full_{name}", clip_frames, fps=10, codec=codec, options={"g": "5"})
        data = full.read_bytes()
        (tmp_path / name).write_bytes(data[: int(len(data) * 0.6)])
        try:
            out = read_frames(tmp_path / name, num_frames=6, size=64)
        except VideoDecodeError as e:
            assert name in str(e)
            continue
        ids = identify(out.frames, clip_frames)
        ref = torch.from_numpy(clip_frames[ids]).permute(0, 3, 1, 2).float()
        assert (out.frames.float() - ref).abs().mean() < 8  # real frames, not garbage
        assert ids == sorted(ids) and max(ids) < 25
        if name.endswith(".ts"):  # real timestamps survive the cut: each one names the frame returned
            assert [round(t * 10) for t in out.timestamps] == ids


def test_timeout_is_enforced(tmp_path, clip_frames) -> None:
    path = write_video(tmp_path / "t.mp4", clip_frames, fps=10)
    with pytest.raises(VideoDecodeError, match="timed out"):
        read_frames(path, timeout=0.0)


# ------------------------------------------------------------------------------------------ normalisation


def test_normalize_matches_torchvision() -> None:
    from torchvision.transforms import Normalize

    x = torch.randint(0, 256, (2, 4, 3, 8, 8), dtype=torch.uint8)
    ref = Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))(
        x.float().div(255).flatten(0, 1)
    ).view(2, 4, 3, 8, 8)
    out = normalize(x)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError):
        normalize(torch.zeros(4, 8, 8))


def test_normalize_in_place_is_the_out_of_place_formula_and_leaves_its_input() -> None:
    """normalize works in place on one copy (a speed choice): the bits must be those of ``(x / 255 - mean) / std``,
    and float32 input, which ``.to(float32)`` would not copy, must come back untouched."""
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
    x = torch.randint(0, 256, (2, 5, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(normalize(x), (x.float() / 255.0 - mean) / std)
    f = x.float()
    before = f.clone()
    assert torch.equal(normalize(f), normalize(x)) and torch.equal(f, before)


# ------------------------------------------------------------------------------------------ real fixtures

VIDEO_FIXTURES = ["mmaction2_demo.mp4", "mmaction2_test.avi", "decord_flipping_a_pancake.mkv", "human2bot_task5_0.webm"]


@pytest.mark.parametrize("name", VIDEO_FIXTURES)
def test_real_fixture_videos_match_naive_decode(name: str, shared_fixtures: Path) -> None:
    """Against an independent reference: decode every frame in order, take the official indices, resize with
    torch (bicubic, antialiased). Frames must agree within a small pixel tolerance."""
    path = shared_fixtures / "videos" / name
    with av.open(str(path)) as c:
        all_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = official_uniform(len(all_frames), 12)
    ref = torch.from_numpy(np.stack([all_frames[i] for i in idx])).permute(0, 3, 1, 2).float()
    ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bicubic", antialias=True).clamp(0, 255)
    out = read_frames(path, num_frames=12, size=64)
    assert out.frames.shape == (12, 3, 64, 64)
    per_frame = (out.frames.float() - ref).abs().mean(dim=(1, 2, 3))
    assert per_frame.max() < 4, per_frame
    assert probe(path).num_frames == len(all_frames)
    # one decoder, or GOP runs decoded in parallel (where the frames span several GOPs): the very same pixels
    assert torch.equal(read_frames(path, num_frames=12, size=64, threads=1).frames, out.frames)
    assert torch.equal(read_frames(path, num_frames=12, size=64, threads=2).frames, out.frames)


# ------------------------------------------------------------------------------ keyframe layouts (seek loop)


def scene_cut_frames(n: int, cuts: list[int], h: int = 64) -> np.ndarray:
    """n frames whose scene changes (smooth blocks <-> noise) at the indices in ``cuts``; within a scene each
    frame is brighter than the last, so every frame still carries its index for :func:`identify`."""
    smooth = make_frames(1, h, h, seed=11)[0].astype(int)
    noise = np.random.default_rng(7).integers(30, 200, (h, h, 3))
    bounds = [0, *cuts, n]
    out = [
        np.clip((smooth if s % 2 == 0 else noise) + 6 * i, 0, 255)
        for s in range(len(bounds) - 1)
        for i in range(bounds[s], bounds[s + 1])
    ]
    return np.stack(out).astype(np.uint8)


# (id, frames, scene cuts, x264 params). A scene cut closer than min-keyint to the last keyframe becomes a
# non-IDR I-frame: FFmpeg's H.264 parser flags its packet key, but the MP4 sync-sample table (what seeking uses)
# does not list it, so seeking to it lands on the previous keyframe. That used to make the reader re-seek forever.
KEYFRAME_LAYOUTS = [
    ("cut-middle", 8, [4], "min-keyint=8:keyint=250:bframes=0"),
    ("cut-middle-lossless", 8, [4], "qp=0:min-keyint=8:keyint=250:bframes=0"),
    ("two-cuts", 12, [4, 8], "min-keyint=12:keyint=250:bframes=0"),
    ("cut-bframes", 12, [5], "min-keyint=12:keyint=250:bframes=2"),
    ("keyint4", 8, [], "keyint=4:min-keyint=4"),
    ("keyint2", 12, [], "keyint=2:min-keyint=2:bframes=0"),
    ("keyint3-bframes", 12, [], "keyint=3:min-keyint=3:bframes=2"),
]


@pytest.mark.parametrize("layout", KEYFRAME_LAYOUTS, ids=[k[0] for k in KEYFRAME_LAYOUTS])
def test_keyframe_layouts_read_right_frames_without_hanging(tmp_path, layout) -> None:
    name, n, cuts, params = layout
    frames = scene_cut_frames(n, cuts)
    path = write_video(tmp_path / f"{name}.mp4", frames, fps=8, options={"x264-params": params})
    with av.open(str(path)) as c:
        keys = [i for i, p in enumerate(c.demux(video=0)) if p.is_keyframe and p.size]
    with av.open(str(path)) as c:  # independent reference: every frame, decoded in order
        naive = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(naive) == n
    if name.startswith("cut-middle"):
        assert keys == [0, 4], keys  # the clip really has the layout of the bug report
    for t in (8, n, 3):  # a few, all (every keyframe crossed) and a sparse pick (seeks past keyframes)
        out = read_frames(path, num_frames=t, size=64, timeout=5)
        expected = official_uniform(n, t)
        assert identify(out.frames, frames) == expected
        ref = torch.from_numpy(naive[expected]).permute(0, 3, 1, 2).float()
        assert (out.frames.float() - ref).abs().max() <= 2  # the very frames a front-to-back decode gives
        assert out.timestamps == pytest.approx([i / 8 for i in expected], abs=1e-3)
    assert identify(read_middle_frame(path, size=64, timeout=5), frames) == [n // 2]


class _SeekCounter:
    """Wraps an opened container and records every seek (the reader's seek loop must make progress)."""

    def __init__(self, container, seeks: list[int]) -> None:
        self._c, self._seeks = container, seeks

    def __getattr__(self, name: str):
        return getattr(self._c, name)

    def seek(self, offset: int, *args, **kwargs):
        self._seeks.append(offset)
        return self._c.seek(offset, *args, **kwargs)


@pytest.mark.parametrize("layout", [KEYFRAME_LAYOUTS[0], KEYFRAME_LAYOUTS[2], KEYFRAME_LAYOUTS[5]], ids=lambda k: k[0])
@pytest.mark.parametrize("threads", [1, None])
def test_seek_loop_makes_progress(tmp_path, monkeypatch, layout, threads) -> None:
    """On every opened container each seek must go to a later keyframe than the last one, no keyframe is sought
    twice (at most one seek per keyframe, whether one decoder or parallel GOP runs), and GOP skipping must
    still happen where the container can seek (keyint2: a sparse pick seeks past GOPs). The container of the
    index pass is reused for decoding (MP4): it rewinds to the first keyframe with one seek."""
    import clipvip.video.pyav_backend as backend

    name, n, cuts, params = layout
    frames = scene_cut_frames(n, cuts)
    path = write_video(tmp_path / f"{name}.mp4", frames, fps=8, options={"x264-params": params})
    with av.open(str(path)) as c:
        num_keys = sum(1 for p in c.demux(video=0) if p.is_keyframe and p.size)
    per_container: list[list[int]] = []
    real_open = backend.open_container

    def counting_open(*a, **k):
        per_container.append([])
        return _SeekCounter(real_open(*a, **k), per_container[-1])

    monkeypatch.setattr(backend, "open_container", counting_open)
    for t in (n, 3):
        per_container.clear()
        out = read_frames(path, num_frames=t, size=64, timeout=5, threads=threads)
        assert identify(out.frames, frames) == official_uniform(n, t)
        seeks = [s for c in per_container for s in c]
        assert all(c == sorted(set(c)) for c in per_container), per_container
        assert len(seeks) == len(set(seeks)) <= num_keys, per_container
    if name == "keyint2":
        assert any(s > 0 for s in seeks), "a sparse pick on a seekable file should skip GOPs by seeking"


# ------------------------------------------------------------------------------ parallel GOP decoding


@pytest.fixture(scope="module")
def multi_gop_frames() -> np.ndarray:
    return make_frames(96, seed=3)


@pytest.mark.parametrize("name,opts", [("gops.mp4", {"g": "16", "bf": "2"}), ("gops.mkv", {"g": "24"})])
def test_parallel_gop_runs_return_the_sequential_frames(tmp_path, monkeypatch, multi_gop_frames, name, opts) -> None:
    """Several GOPs: with decoder threads allowed, runs of GOPs decode concurrently (each with its own container);
    the result must be bit-identical to the single-decoder read, and every frame the one sampled."""
    import clipvip.video.pyav_backend as backend

    path = write_video(tmp_path / name, multi_gop_frames, fps=24, options=opts)
    runs: list[int] = []
    real = backend.decode_parallel
    monkeypatch.setattr(backend, "decode_parallel", lambda chunks, *a: runs.append(len(chunks)) or real(chunks, *a))
    seq = read_frames(path, num_frames=12, size=64, threads=1)
    assert runs == []  # threads=1: one decoder, no worker threads
    for threads in (None, 2, 3):
        par = read_frames(path, num_frames=12, size=64, threads=threads)
        assert torch.equal(par.frames, seq.frames) and par.timestamps == seq.timestamps
    assert runs and all(r >= 2 for r in runs), runs
    assert identify(seq.frames, multi_gop_frames) == official_uniform(96, 12)
    mid = read_frames(path, num_frames=5, size=64, mode="random", rng=np.random.default_rng(2), with_middle=True)
    want = sample_indices(96, 5, "random", np.random.default_rng(2)).tolist()
    assert identify(mid.frames, multi_gop_frames) == want and identify(mid.middle, multi_gop_frames) == [48]


def test_threads_1_starts_no_threads(tmp_path, monkeypatch, multi_gop_frames) -> None:
    import threading

    path = write_video(tmp_path / "gops.mp4", multi_gop_frames, fps=24, options={"g": "16"})

    def no_threads(*a, **k):
        raise AssertionError("threads=1 must not start threads")

    monkeypatch.setattr(threading, "Thread", no_threads)
    out = read_frames(path, num_frames=12, size=64, threads=1)
    assert identify(out.frames, multi_gop_frames) == official_uniform(96, 12)


def test_plan_chunks_balances_whole_gops() -> None:
    from clipvip.video.gop_parallel import plan_chunks

    pts = list(range(300))
    keys = [0, 150, 300 - 10]
    targets = [0, 28, 56, 84, 112, 140, 168, 196, 224, 252, 280, 299]
    chunks = plan_chunks(targets, keys, pts, 2)
    assert chunks == [[0, 28, 56, 84, 112, 140], [168, 196, 224, 252, 280, 299]]
    assert [t for c in plan_chunks(targets, keys, pts, 4) for t in c] == targets  # never splits inside a GOP
    assert plan_chunks(targets, keys, pts, 1) == [targets]
    assert plan_chunks(targets, [0], pts, 2) == [targets]  # one GOP: nothing to split
    # tiny GOP runs: an extra open costs more than it saves
    assert plan_chunks([0, 2, 5, 7], [0, 4], list(range(8)), 2) == [[0, 2, 5, 7]]


def test_parallel_failure_and_deadline_stop_all_runs(tmp_path, monkeypatch, multi_gop_frames) -> None:
    """A failing or slow GOP run ends the whole read with VideoDecodeError, and no worker thread outlives it."""
    import threading

    import clipvip.video.pyav_backend as backend

    path = write_video(tmp_path / "gops.mkv", multi_gop_frames, fps=24, options={"g": "24"})
    real_convert = backend.convert_frame
    main = threading.main_thread()

    def failing(*a, **k):
        if threading.current_thread() is not main:
            raise RuntimeError("boom in a worker")
        return real_convert(*a, **k)

    before = threading.active_count()
    monkeypatch.setattr(backend, "convert_frame", failing)
    with pytest.raises(VideoDecodeError, match="boom in a worker"):
        read_frames(path, num_frames=12, size=64, threads=2)
    assert threading.active_count() == before

    def slow(*a, **k):
        import time

        time.sleep(0.2)
        return real_convert(*a, **k)

    monkeypatch.setattr(backend, "convert_frame", slow)
    with pytest.raises(VideoDecodeError, match="timed out"):
        read_frames(path, num_frames=12, size=64, threads=2, timeout=0.5)
    assert threading.active_count() == before


def test_parallel_runs_survive_keyframes_missing_from_the_seek_index(tmp_path, monkeypatch) -> None:
    """A scene-cut I-frame is flagged key in its packet but missing from the MP4 sync-sample table: the GOP run
    that seeks to it lands on the previous keyframe and must decode through, giving the very same frames."""
    import clipvip.video.pyav_backend as backend

    n, cut = 48, 20
    smooth = make_frames(1, seed=11)[0].astype(int) // 2
    noise = np.random.default_rng(7).integers(20, 90, (64, 64, 3))
    # two scenes; within one, each frame 6 levels brighter than the last
    frames = np.stack([(smooth if i < cut else noise) + 6 * (i if i < cut else i - cut) for i in range(n)])
    frames = frames.astype(np.uint8)
    params = f"qp=2:min-keyint={n}:keyint=250:bframes=0"
    path = write_video(tmp_path / "cut.mp4", frames, fps=8, options={"x264-params": params})
    with av.open(str(path)) as c:
        assert [i for i, p in enumerate(c.demux(video=0)) if p.is_keyframe and p.size] == [0, cut]
    runs: list[int] = []
    real = backend.decode_parallel
    monkeypatch.setattr(backend, "decode_parallel", lambda chunks, *a: runs.append(len(chunks)) or real(chunks, *a))
    par = read_frames(path, num_frames=12, size=64, threads=2, timeout=5)
    assert runs == [2]
    seq = read_frames(path, num_frames=12, size=64, threads=1, timeout=5)
    assert torch.equal(par.frames, seq.frames)
    assert identify(par.frames, frames) == official_uniform(n, 12)


# ------------------------------------------------------------------------------------------- decoder seam


class ArrayDecoder:
    """A second backend in a few lines: the "file" is an in-memory array of frames already at the output size."""

    def __init__(self, frames: np.ndarray, fps: float = 8.0) -> None:
        self.frames, self.fps = frames, fps

    def decode(self, path: str, data: bytes | None, request: FrameRequest) -> DecodedFrames:
        n = len(self.frames)
        idx = request.pick(n)
        assert np.array_equal(request.pick(n), idx)  # the seam's promise: asking again gives the same draw
        frames = torch.from_numpy(self.frames[idx]).permute(0, 3, 1, 2).contiguous()
        return DecodedFrames(frames, [i / self.fps for i in idx.tolist()], n / self.fps)

    def probe(self, path: str, timeout: float) -> VideoInfo:
        h, w = self.frames.shape[1:3]
        return VideoInfo(len(self.frames) / self.fps, self.fps, len(self.frames), w, h, codec="array")


def test_a_second_backend_is_one_class_behind_the_seam() -> None:
    """read_frames / read_middle_frame / probe keep their rules (sampling, middle frame, with_middle from the
    same decode) whatever backend decodes; the PyAV backend is one such decoder."""
    frames = make_frames(30, seed=5)
    dec = ArrayDecoder(frames)
    assert isinstance(dec, VideoDecoder) and isinstance(PyAVDecoder(), VideoDecoder)
    out = read_frames("clip.array", 5, 64, "random", rng=np.random.default_rng(3), with_middle=True, decoder=dec)
    want = sample_indices(30, 5, "random", np.random.default_rng(3)).tolist()
    assert identify(out.frames, frames) == want and identify(out.middle, frames) == [15]
    assert out.timestamps == [i / 8 for i in want] and out.duration == 30 / 8 and out.path == "clip.array"
    assert identify(read_middle_frame("clip.array", size=64, decoder=dec), frames) == [15]
    info = probe("clip.array", decoder=dec)
    assert (info.num_frames, info.width, info.height, info.codec) == (30, 64, 64, "array")
