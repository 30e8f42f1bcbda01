"""Reading frames from video files (and images) with PyAV.

Why this design:

* **Which frames.** Sampling is done over the *actual* frames of the stream in presentation order, found by a
  demux-only pass over the packets (cheap: no decoding). Header frame counts and ``fps * duration`` are never
  trusted (Matroska/WebM have none, VFR files lie), so variable frame rate and odd containers sample the same
  frames decord would. ``mode="uniform"`` is the official CLIP-ViP rule ``linspace(0, N-1, T).astype(int)``;
  ``mode="random"`` is the official training jitter (random start within the first interval, random end within
  the last). Videos shorter than T frames repeat indices.
* **Speed.** We only decode what we need: for every wanted frame we seek to the last keyframe at or before it
  (skipping whole GOPs when the container has several), only the wanted frames are converted, and the
  conversion + resize happen in one call to FFmpeg's scaler (``frame.reformat``). Decoder threads are on.
  When the wanted frames span several keyframe intervals and ``threads != 1``, runs of whole GOPs are decoded
  concurrently, each by its own container and decoder (FFmpeg decodes with the GIL released; frame threading
  alone parallelises a chain of P-frames poorly). The runs are the same sequential decode, so the frames are
  bit-identical to ``threads=1``, which never starts a thread (the setting for DataLoader workers).
  MP4/MOV/Matroska decode from the container the index pass opened (one open per read).
* **Safety.** Every failure is a :class:`VideoDecodeError` naming the file and the reason. Decoding checks a
  wall-clock deadline between packets (``timeout``), so a pathological file cannot stall a data loader.
  If the stream's timestamps turn out to be unusable (e.g. AVI with packed B-frames: decoded pts are not
  monotonic) or seeking lands in the wrong place, the reader falls back to a sequential decode that counts
  output frames, so it never returns the wrong frames silently. A seek that lands *before* the keyframe asked
  for (MP4 seeks by its sync-sample table, which lists fewer keyframes than the packets' key flags, e.g. H.264
  scene-cut I-frames) switches that read to decoding through, and every re-seek goes to a later keyframe than
  the last one, so the seek loop always makes progress.
* **Images** (``IMAGE_EXTENSIONS``) read as 1-frame videos: ``frames`` has ``T == 1`` whatever ``num_frames``
  is; the caller decides whether to repeat it (``encode_image`` treats a 1-frame input as an image). EXIF
  orientation is applied and any mode (grayscale, palette, alpha) is converted to RGB as CLIP's preprocessing
  does (``convert("RGB")``: alpha is dropped). Images go through the same FFmpeg scaler as video frames.
* **Rotation** metadata (display matrix) is applied to the output (multiples of 90 degrees).
* **Several video streams**: the one with the most pixels (width x height) is read; ties go to the first.
  Cover-art streams (``attached_pic``) are never read as video.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
     ".m2ts", ".ogv", ".gif", ".vob", ".asf", ".divx", ".f4v", ".y4m"}
)  # fmt: skip
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_TIMEOUT = 60.0
SampleMode = Literal["uniform", "random"]
ResizeMode = Literal["squash", "crop"]


class VideoDecodeError(Exception):
    """A file could not be read. ``path`` and ``reason`` are kept so loaders can count and report skips."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass
class VideoFrames:
    """Frames read from one file. ``timestamps``: seconds (from the first frame) of the frames used."""

    frames: torch.Tensor  # uint8 [T, 3, size, size]
    timestamps: list[float]
    duration: float | None
    path: str
    middle: torch.Tensor | None = None  # uint8 [1, 3, size, size] when read with ``with_middle=True``


@dataclass
class VideoInfo:
    """What the index needs to know about a file; ``num_frames`` is counted from packets, not the header."""

    duration: float | None
    fps: float | None
    num_frames: int
    width: int
    height: int
    codec: str = ""
    rotation: int = 0


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 255]) [..., 3, H, W] -> float32 CLIP mean/std normalised. Kept separate from
    reading so that uint8 frames can be cached / shipped between processes at a quarter of the size."""
    if frames.ndim < 3 or frames.shape[-3] != 3:
        raise ValueError(f"normalize expects [..., 3, H, W], got {tuple(frames.shape)}")
    x = frames.to(torch.float32) / 255.0
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def sample_indices(
    n: int, num_frames: int, mode: SampleMode = "uniform", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Frame indices into a video of ``n`` frames, the official CLIP-ViP rule (see module docstring)."""
    if n <= 0:
        raise ValueError(f"cannot sample from a video with {n} frames")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if mode == "uniform":
        return np.linspace(0, n - 1, num_frames).astype(int)
    if mode != "random":
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    rng = rng if rng is not None else np.random.default_rng()
    if num_frames == 1:
        return np.array([int(rng.integers(0, n))])
    interval = int(n / (num_frames - 1))
    start = int(rng.integers(0, interval + 1))
    end = int(rng.integers(max(n - 1 - interval, 0), n))
    start = min(start, end)
    return np.linspace(start, end, num_frames).astype(int)


# ----------------------------------------------------------------------------------------------------
# internals


class _Deadline:
    def __init__(self, path: str, timeout: float, cancel: threading.Event | None = None) -> None:
        self.path, self.timeout = path, timeout
        self.end = time.monotonic() + timeout
        self.cancel = cancel

    def sharing(self, cancel: threading.Event) -> _Deadline:
        """The same deadline, also stopping when ``cancel`` is set (a sibling GOP worker failed)."""
        d = _Deadline(self.path, self.timeout, cancel)
        d.end = self.end
        return d

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled()
        if time.monotonic() > self.end:
            raise VideoDecodeError(self.path, f"timed out after {self.timeout:g} s")


class _Cancelled(Exception):
    """Internal: a GOP worker stops because another one failed (the failure is what gets reported)."""


class _Fallback(Exception):
    """Internal: the fast (pts + seek) path cannot be trusted for this file. ``str(e)`` is "seek" (seeking
    misbehaved: decode front to back by pts) or "pts" (timestamps unusable: count decoded frames)."""


def _is_url(path: str) -> bool:
    return "://" in path


def _open(path: str, timeout: float, data: bytes | None = None) -> av.container.InputContainer:
    if data is not None:
        if not data:
            raise VideoDecodeError(path, "file is empty")
        try:
            return av.open(io.BytesIO(data), timeout=timeout)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(path, f"cannot open: {e}") from e
    if not _is_url(path):
        if not os.path.exists(path):
            raise VideoDecodeError(path, "file does not exist")
        if not os.path.isfile(path):
            raise VideoDecodeError(path, "not a regular file")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(path, "file is empty")
    try:
        return av.open(path, timeout=timeout)
    except av.error.ExitError as e:  # FFmpeg's I/O interrupt: our timeout fired while opening
        raise VideoDecodeError(path, f"timed out after {timeout:g} s (opening)") from e
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"cannot open: {e}") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoDecodeError(path, f"cannot open: {e}") from e


def _pick_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    streams = [
        s for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)
    ]  # fmt: skip
    if not streams:
        detail = " (only cover art)" if container.streams.video else ""
        raise VideoDecodeError(path, "no video stream" + detail)

    def pixels(s: av.video.stream.VideoStream) -> tuple[int, int]:
        return (s.codec_context.width or 0) * (s.codec_context.height or 0), -s.index

    return max(streams, key=pixels)


@dataclass
class _Index:
    pts: list[int]  # all frame pts in presentation order (possibly restricted to a window)
    key_pts: list[int]  # keyframe pts, sorted
    origin: int  # pts of time 0
    time_base: float
    duration: float | None
    fps: float | None


def _first_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream, deadline: _Deadline) -> int:
    """pts of the first frame in presentation order (min over the first packets: B-frames reorder)."""
    first: list[int] = []
    for packet in container.demux(stream):
        deadline.check()
        if packet.pts is not None and not packet.is_corrupt:
            first.append(packet.pts)
        if len(first) >= 32:
            break
    if not first:
        raise _Fallback("pts")
    return min(first)


def _build_index(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: str,
    deadline: _Deadline,
    start: float | None,
    end: float | None,
) -> _Index:
    """Demux (no decoding) to list every frame's pts and the keyframes (within [start, end] if given)."""
    tb = float(stream.time_base) if stream.time_base else None
    if tb is None:
        raise _Fallback("pts")
    origin = _first_pts(container, stream, deadline) if start is not None else None
    duration = None
    if stream.duration is not None:
        duration = stream.duration * tb
    elif container.duration is not None:
        duration = container.duration / 1e6
    fps = float(stream.average_rate) if stream.average_rate else (
        float(stream.guessed_rate) if stream.guessed_rate else None
    )  # fmt: skip
    lo = None if origin is None else origin + math.floor(start / tb)
    hi = None if end is None else origin + math.ceil(end / tb)
    # B-frame reordering: keep demuxing a little past `end` so late-arriving smaller pts are not lost
    hi_stop = None if hi is None else hi + math.ceil(2.0 / tb)
    pts: list[int] = []
    keys: list[int] = []
    try:
        if lo is not None:
            container.seek(max(lo, origin), stream=stream, backward=True)
        for packet in container.demux(stream):
            deadline.check()
            if packet.pts is None:
                if packet.size:
                    raise _Fallback("pts")  # packets without timestamps: only counting output frames works
                continue
            if hi_stop is not None and packet.pts > hi_stop and (packet.dts is None or packet.dts > hi_stop):
                break
            if packet.is_corrupt:
                continue  # e.g. the cut-off last packet of a truncated file: not a frame we can return
            if packet.is_keyframe:
                keys.append(packet.pts)
            if (lo is None or packet.pts >= lo) and (hi is None or packet.pts <= hi):
                pts.append(packet.pts)
    except av.error.FFmpegError as e:
        if not pts:
            raise VideoDecodeError(path, f"cannot demux: {e}") from e
        # truncated / damaged tail: keep the packets read so far
    pts.sort()
    keys.sort()
    if len(set(pts)) != len(pts):
        raise _Fallback("pts")  # duplicate timestamps: pts cannot identify frames
    if not keys:
        raise _Fallback("pts")
    if origin is None:
        origin = pts[0] if pts else 0  # time 0 = the first frame (not the container's start_time)
    if duration is None and pts:
        duration = (pts[-1] - origin) * tb
    return _Index(pts=pts, key_pts=keys, origin=origin, time_base=tb, duration=duration, fps=fps)


def _setup_decoder(stream: av.video.stream.VideoStream, threads: int | None) -> None:
    cc = stream.codec_context
    if threads == 1:
        cc.thread_type = "NONE"
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = threads or 0


def _convert(
    frame: av.VideoFrame, size: int, resize: ResizeMode, reformatter: VideoReformatter | None = None
) -> np.ndarray:
    """One decoded frame -> uint8 [size, size, 3] RGB, scaled by FFmpeg (bicubic), rotation applied."""
    w, h = frame.width, frame.height
    if resize == "squash":
        tw = th = size
    elif resize == "crop":
        scale = size / min(w, h)
        tw, th = max(size, round(w * scale)), max(size, round(h * scale))
    else:
        raise ValueError(f"resize must be 'squash' or 'crop', got {resize!r}")
    if reformatter is None:
        reformatter = VideoReformatter()
    arr = reformatter.reformat(frame, width=tw, height=th, format="rgb24", interpolation="BICUBIC").to_ndarray()
    if resize == "crop":
        top, left = (th - size) // 2, (tw - size) // 2
        arr = arr[top : top + size, left : left + size]
    rot = 0
    try:
        rot = int(round((frame.rotation or 0) / 90.0)) % 4
    except (AttributeError, ValueError, TypeError):
        rot = 0
    if rot:
        arr = np.rot90(arr, k=rot)
    return np.ascontiguousarray(arr)


Opener = Callable[[], tuple[av.container.InputContainer, av.video.stream.VideoStream]]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parallel_workers(threads: int | None) -> int:
    """How many GOP runs may decode at once: ``threads`` if given, else the CPUs this process may use (max 4)."""
    if threads is not None:
        return max(threads, 1)
    return max(1, min(_cpus(), 4))


# containers whose seeking is approximate (no index): decode them front to back instead
_NO_SEEK_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "m4v"})
# containers where a packet's pts is the pts of the frame it codes (not so in AVI: packed B-frames), so
# unwanted non-reference frames can be skipped by packet
_PTS_PER_PACKET_FORMATS = frozenset({"mov", "matroska"})


def _decode_by_pts(
    opener: Opener,
    targets: list[int],
    keys: list[int],
    deadline: _Deadline,
    convert: Callable[[av.VideoFrame], np.ndarray],
    allow_seek: bool,
    opened: tuple[av.container.InputContainer, av.video.stream.VideoStream] | None = None,
) -> dict[int, np.ndarray]:
    """Decode the frames with the given pts (sorted, unique), seeking to the keyframe before each one when
    that skips work. Raises _Fallback("seek") when seeking misbehaves and _Fallback("pts") when the stream's
    timestamps cannot identify frames. ``opened``: a container already demuxed by the index pass (saves an
    open; only for formats in ``_PTS_PER_PACKET_FORMATS``): it is always seeked first, and always closed."""

    def key_before(t: int) -> int:
        i = bisect.bisect_right(keys, t) - 1
        return keys[max(i, 0)]

    out: dict[int, np.ndarray] = {}
    pos = 0
    wanted = set(targets)
    container, stream = opened if opened is not None else opener()
    cc = stream.codec_context
    try:
        fmt = container.format.name.split(",")[0]
        if allow_seek and fmt in _NO_SEEK_FORMATS:
            allow_seek = False
        skip_unwanted = fmt in _PTS_PER_PACKET_FORMATS
        fresh = opened is None  # a reused container sits at the end of the index pass: seek even to keys[0]
        # Progress guarantee: every pass of this loop either returns, ends it, or re-seeks to a keyframe strictly
        # after the one this pass started from (see the `break` below), so it runs at most len(keys) + 1 times.
        while pos < len(targets):
            deadline.check()
            seek_to = key_before(targets[pos])
            seeked = not fresh or (allow_seek and seek_to != keys[0])
            if seeked:
                container.seek(seek_to, stream=stream, backward=True)
            last = None
            first = True
            advanced = False
            for packet in container.demux(stream):
                deadline.check()
                # a packet carries its own frame's pts: frames nobody references and nobody wants are not
                # decoded at all (FFmpeg's skip_frame=NONREF, set per packet)
                if skip_unwanted:
                    cc.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
                for frame in packet.decode():
                    p = frame.pts
                    if p is None:
                        raise _Fallback("pts")
                    if frame.is_corrupt:
                        if p >= targets[pos]:
                            raise _Fallback("pts")  # a wanted frame is damaged: count the good frames instead
                        continue
                    if last is not None and p < last:
                        raise _Fallback("pts")  # output pts not monotonic (e.g. packed B-frames in AVI)
                    if first and seeked and p > targets[pos]:
                        raise _Fallback("seek")  # seek landed after the frame we want
                    if first and seeked and p < seek_to:
                        # Seek landed before the keyframe asked for: the demuxer seeks by its own index (e.g. the
                        # MP4 sync-sample table), which need not list every packet flagged key (the H.264 parser
                        # flags non-IDR I-frames too). Re-seeking would land here again, so decode through.
                        allow_seek = False
                    if p > targets[pos]:
                        raise _Fallback("pts")  # the decoder never produced a frame the packets promised
                    first = False
                    last = p
                    if p == targets[pos]:
                        out[p] = convert(frame)
                        pos += 1
                    if pos == len(targets):
                        return out
                if allow_seek and last is not None and key_before(targets[pos]) > max(last, seek_to):
                    advanced = True
                    break  # a later keyframe lies between here and the next target: seek, don't decode through
            fresh = False
            if not advanced:
                break  # end of stream with targets left
    finally:
        container.close()
    raise _Fallback("pts")


# decode work (in frames) that opening one more container costs: a GOP worker must save more than this
_OPEN_COST_FRAMES = 12


def _plan_chunks(targets: list[int], keys: list[int], all_pts: list[int], workers: int) -> list[list[int]]:
    """Split the sorted target pts into at most ``workers`` runs of whole keyframe intervals (GOPs), balancing
    the decode work of each run (frames from the GOP's keyframe to its last target: what a sequential decode
    that seeks between GOPs would decode). One run (sequential decoding) unless splitting lowers the largest
    run's work by more than the cost of opening the extra containers."""
    groups: list[list[int]] = []
    costs: list[int] = []
    last_key = None
    for t in targets:
        key = keys[max(bisect.bisect_right(keys, t) - 1, 0)]
        if key != last_key:
            groups.append([])
            costs.append(0)
            last_key = key
        groups[-1].append(t)
        costs[-1] = max(1, bisect.bisect_left(all_pts, t) - bisect.bisect_left(all_pts, key) + 1)
    g = len(groups)
    workers = min(workers, g)
    total = sum(costs)
    if workers < 2:
        return [targets]
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][i]: smallest possible largest run when groups[:i] form k runs (g and workers are small)
    inf = float("inf")
    best = [[inf] * (g + 1) for _ in range(workers + 1)]
    cut = [[0] * (g + 1) for _ in range(workers + 1)]
    best[0][0] = 0
    for k in range(1, workers + 1):
        for i in range(1, g + 1):
            for j in range(k - 1, i):
                v = max(best[k - 1][j], prefix[i] - prefix[j] + _OPEN_COST_FRAMES)
                if v < best[k][i]:
                    best[k][i], cut[k][i] = v, j
    k = min(range(1, workers + 1), key=lambda k: (best[k][g], k))
    if k < 2 or best[k][g] >= total:
        return [targets]
    bounds = []
    i = g
    for kk in range(k, 0, -1):
        bounds.append((cut[kk][i], i))
        i = cut[kk][i]
    return [[t for grp in groups[a:b] for t in grp] for a, b in reversed(bounds)]


def _decode_parallel(
    chunks: list[list[int]],
    opener: Callable[[int | None], tuple[av.container.InputContainer, av.video.stream.VideoStream]],
    keys: list[int],
    deadline: _Deadline,
    make_convert: Callable[[], Callable[[av.VideoFrame], np.ndarray]],
    opened: tuple[av.container.InputContainer, av.video.stream.VideoStream] | None,
    decoder_threads: int | None,
) -> dict[int, np.ndarray]:
    """Decode runs of GOPs concurrently, one container + decoder per run (PyAV releases the GIL while
    FFmpeg decodes and scales), the first run on this thread. Each run is the sequential ``_decode_by_pts``,
    so seeking checks and fallbacks are unchanged; the first failure (in run order) is raised after every
    worker has stopped (a failure cancels the others at their next packet)."""
    cancel = threading.Event()
    results: list[dict[int, np.ndarray] | None] = [None] * len(chunks)
    errors: list[BaseException | None] = [None] * len(chunks)

    def run(i: int, pre: tuple | None) -> None:
        try:
            results[i] = _decode_by_pts(
                lambda: opener(decoder_threads), chunks[i], keys, deadline.sharing(cancel), make_convert(),
                allow_seek=True, opened=pre,
            )  # fmt: skip
        except BaseException as e:  # noqa: BLE001  (re-raised on the calling thread below)
            errors[i] = e
            cancel.set()

    if opened is not None:
        _setup_decoder(opened[1], decoder_threads)
    workers = [threading.Thread(target=run, args=(i, None), daemon=True) for i in range(1, len(chunks))]
    for w in workers:
        w.start()
    try:
        run(0, opened)
    finally:
        for w in workers:
            w.join()
    real = [e for e in errors if e is not None and not isinstance(e, _Cancelled)]
    if real:
        raise real[0]
    out: dict[int, np.ndarray] = {}
    for r in results:
        assert r is not None
        out.update(r)
    return out


def _decode_by_count(
    opener: Opener,
    pick: Callable[[int], np.ndarray],
    n_hint: int | None,
    deadline: _Deadline,
    convert: Callable[[av.VideoFrame], np.ndarray],
    fps: float | None,
    window: tuple[float | None, float | None],
) -> tuple[list[np.ndarray], list[float]]:
    """Sequential decode where the i-th decoded frame is frame i (timestamps = i / fps), for when timestamps
    lie. When ``n_hint`` is missing or wrong, a pass that only decodes counts the decodable frames."""
    rate = fps or 25.0
    start, end = window

    def run(want: set[int], count_only: bool) -> tuple[int, dict[int, np.ndarray]]:
        container, stream = opener()
        last_wanted = max(want) if want else -1
        got: dict[int, np.ndarray] = {}
        i = 0
        try:
            for packet in container.demux(stream):
                deadline.check()
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet: its frame is simply not counted
                for frame in frames:
                    if frame.is_corrupt:
                        continue  # damaged (concealed) frames are not returned and not counted
                    if not count_only and i in want:
                        got[i] = convert(frame)
                    i += 1
                    if not count_only and i > last_wanted:
                        return i, got
        except av.error.FFmpegError:
            pass  # damaged tail: keep what was decoded
        finally:
            container.close()
        return i, got

    def window_range(n: int) -> tuple[int, int]:
        a = 0 if start is None else max(0, math.ceil(start * rate))
        b = n - 1 if end is None else min(n - 1, math.floor(end * rate))
        return a, b

    n = n_hint if n_hint else run(set(), count_only=True)[0]
    for _attempt in range(2):
        a, b = window_range(n)
        if b < a:
            raise _NoFrames()
        idx = [a + int(i) for i in pick(b - a + 1)]
        _, got = run(set(idx), count_only=False)
        if all(i in got for i in idx):
            return [got[i] for i in idx], [round(i / rate, 6) for i in idx]
        n = run(set(), count_only=True)[0]  # the hint was wrong: count, then retry once
    raise _NoFrames()


class _NoFrames(Exception):
    pass


def _read_video(
    path: str,
    pick: Callable[[int], np.ndarray],
    size: int,
    resize: ResizeMode,
    start: float | None,
    end: float | None,
    timeout: float,
    threads: int | None,
    data: bytes | None = None,
    with_middle: bool = False,
) -> VideoFrames:
    deadline = _Deadline(path, timeout)
    memo: dict[int, np.ndarray] = {}
    sample = pick

    def pick(n: int) -> np.ndarray:  # noqa: F811  (same n -> same draw, even if a fallback path re-asks)
        if n not in memo:
            idx = np.asarray(sample(n))
            memo[n] = np.concatenate([idx, [n // 2]]) if with_middle else idx  # the middle-frame rule
        return memo[n]

    def make_convert() -> Callable[[av.VideoFrame], np.ndarray]:
        reformatter = VideoReformatter()  # keeps FFmpeg's scaler context between the frames of one file

        def convert(frame: av.VideoFrame) -> np.ndarray:
            return _convert(frame, size, resize, reformatter)

        return convert

    convert = make_convert()

    def opener(
        decoder_threads: int | None = threads,
    ) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        c = _open(path, timeout, data)
        try:
            st = _pick_stream(c, path)
            _setup_decoder(st, decoder_threads)
        except BaseException:
            c.close()
            raise
        return c, st

    try:
        try:
            container, stream = opener()
            reuse = False
            try:
                index = _build_index(container, stream, path, deadline, start, end)
                # MP4/MOV/Matroska seek reliably by their index: decode from this container instead of opening
                # the file again (the other formats are reopened: their seeking is what the fallbacks are for)
                reuse = container.format.name.split(",")[0] in _PTS_PER_PACKET_FORMATS
            finally:
                if not reuse:
                    container.close()
            opened = (container, stream) if reuse else None
            try:
                if not index.pts:
                    where = "" if start is None and end is None else f" in window [{start}, {end}] s"
                    raise VideoDecodeError(path, "no frames" + where)
                wanted = [index.pts[int(i)] for i in pick(len(index.pts))]
                targets = sorted(set(wanted))
                chunks = [targets]
                if threads != 1 and opened is not None and (data is not None or not _is_url(path)):
                    chunks = _plan_chunks(targets, index.key_pts, index.pts, _parallel_workers(threads))
            except BaseException:
                if opened is not None:
                    container.close()
                raise
            try:
                if len(chunks) > 1:
                    # the thread budget (threads, or the CPUs) is split over the runs: single-threaded decoders
                    # when there are as many runs as CPUs (frame threading on top only costs CPU on a busy host)
                    per_run = max(1, (threads or _parallel_workers(None)) // len(chunks))
                    got = _decode_parallel(chunks, opener, index.key_pts, deadline, make_convert, opened, per_run)
                else:
                    got = _decode_by_pts(opener, targets, index.key_pts, deadline, convert, True, opened)
            except _Fallback as e:
                if str(e) != "seek":
                    raise
                got = _decode_by_pts(opener, targets, index.key_pts, deadline, convert, allow_seek=False)
            arrays = [got[p] for p in wanted]
            stamps = [round((p - index.origin) * index.time_base, 6) for p in wanted]
            duration = index.duration
        except _Fallback:
            container, stream = opener()
            fps = float(stream.average_rate) if stream.average_rate else None
            n_hint = stream.frames or None
            duration = container.duration / 1e6 if container.duration is not None else None
            container.close()
            try:
                arrays, stamps = _decode_by_count(opener, pick, n_hint, deadline, convert, fps, (start, end))
            except _NoFrames:
                raise VideoDecodeError(path, "no decodable frames") from None
    except VideoDecodeError:
        raise
    except av.error.ExitError as e:
        raise VideoDecodeError(path, f"timed out after {timeout:g} s (reading)") from e
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed: {e}") from e
    except (MemoryError, OSError, ValueError, RuntimeError, IndexError) as e:
        raise VideoDecodeError(path, f"decoding failed: {type(e).__name__}: {e}") from e
    frames = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if with_middle:
        return VideoFrames(frames[:-1], stamps[:-1], duration, path, middle=frames[-1:].clone())
    return VideoFrames(frames=frames, timestamps=stamps, duration=duration, path=path)


def _read_image(path: str, size: int, resize: ResizeMode, data: bytes | None = None) -> VideoFrames:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise VideoDecodeError(path, "file does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise VideoDecodeError(path, f"cannot read image: {e}") from e
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    arr = torch.from_numpy(_convert(frame, size, resize)).permute(2, 0, 1)[None].contiguous()
    return VideoFrames(arr, [0.0], None, path, middle=arr)


def _source(path: str | os.PathLike | bytes, name: str | None) -> tuple[bytes | None, str]:
    if isinstance(path, (bytes, bytearray, memoryview)):
        return bytes(path), name or "<bytes>"
    return None, os.fspath(path)


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------------------
# public API


def read_frames(
    path: str | os.PathLike | bytes,
    num_frames: int = 12,
    size: int = 224,
    mode: SampleMode = "uniform",
    resize: ResizeMode = "squash",
    start: float | None = None,
    end: float | None = None,
    rng: np.random.Generator | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
    with_middle: bool = False,
    name: str | None = None,
) -> VideoFrames:
    """Read ``num_frames`` frames as uint8 [T, 3, size, size] (T == 1 for images; see the module docstring).

    ``resize="squash"`` is the official bicubic resize to size x size; ``"crop"`` scales the shortest side to
    ``size`` and center-crops. ``start``/``end`` (seconds) restrict sampling to a window of a long video.
    ``threads``: decoding threads (None = automatic: FFmpeg's decoder threads, and GOPs decoded in parallel when
    the frames span several; 1 = one single-threaded decoder and no extra thread, good inside many loader
    workers; k = at most k parallel GOP runs). Raises :class:`VideoDecodeError` for anything unreadable,
    including a decode slower than ``timeout`` seconds.

    ``with_middle=True`` also returns the :func:`read_middle_frame` frame as ``.middle`` from the same decode.
    ``path`` may be the file's bytes (e.g. a WebDataset member); ``name`` then labels it (errors, image suffix).
    """
    data, path = _source(path, name)
    if mode not in ("uniform", "random"):
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    if resize not in ("squash", "crop"):
        raise ValueError(f"resize must be 'squash' or 'crop', got {resize!r}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"{path}: end ({end}) is before start ({start})")
    if _is_image(path):
        return _read_image(path, size, resize, data)

    def pick(n: int) -> np.ndarray:
        return sample_indices(n, num_frames, mode, rng)

    return _read_video(path, pick, size, resize, start, end, timeout, threads, data, with_middle)


def read_middle_frame(
    path: str | os.PathLike | bytes,
    size: int = 224,
    resize: ResizeMode = "squash",
    timeout: float = DEFAULT_TIMEOUT,
    name: str | None = None,
) -> torch.Tensor:
    """THE middle-frame rule: frame index ``N // 2`` of the N frames in presentation order (the image itself
    for an image file) -> uint8 [1, 3, size, size]. Shared by the post-pretraining image input and the
    captioner so the caption always describes the frame the model sees."""
    data, path = _source(path, name)
    if _is_image(path):
        return _read_image(path, size, resize, data).frames

    def pick(n: int) -> np.ndarray:
        return np.array([n // 2])

    return _read_video(path, pick, size, resize, None, None, timeout, None, data).frames


def probe(path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> VideoInfo:
    """Duration / fps / exact frame count / size of a file by demuxing (decodes one frame for rotation)."""
    path = os.fspath(path)
    if _is_image(path):
        frames = _read_image(path, 1, "squash")  # validates the file
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        del frames
        return VideoInfo(duration=None, fps=None, num_frames=1, width=w, height=h, codec="image")
    deadline = _Deadline(path, timeout)
    container = _open(path, timeout)
    try:
        stream = _pick_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        rotation = 0
        try:
            index = _build_index(container, stream, path, deadline, None, None)
            n, duration, fps = len(index.pts), index.duration, index.fps
        except _Fallback:
            n = stream.frames
            duration = container.duration / 1e6 if container.duration is not None else None
            fps = float(stream.average_rate) if stream.average_rate else None
        # rotation is a per-frame side data in FFmpeg >= 7: look at the first frame only
        try:
            if n:
                container.seek(stream.start_time or 0, stream=stream, backward=True)
            frame = None
            for packet in container.demux(stream):  # bounded: stops at the first frame, or at the deadline
                deadline.check()
                frame = next(iter(packet.decode()), None)
                if frame is not None:
                    break
            if frame is not None:
                rotation = int(round((frame.rotation or 0) / 90.0)) % 4 * 90
        except av.error.FFmpegError:
            pass
        if rotation in (90, 270):
            width, height = height, width
    except VideoDecodeError:
        raise
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"cannot probe: {e}") from e
    finally:
        container.close()
    if n == 0:
        raise VideoDecodeError(path, "no frames")
    return VideoInfo(duration=duration, fps=fps, num_frames=n, width=width, height=height, codec=codec,
                     rotation=rotation)  # fmt: skip
