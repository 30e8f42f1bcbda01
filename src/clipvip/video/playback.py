"""Making any indexed video playable in a browser: a check of what browsers play, an on-the-fly transcode of one
time window into fragmented MP4 (H.264) or WebM (VP9/VP8), cached on disk, and a strip of frames as the last resort.

WHY: ``<video>`` plays only a few container/codec pairs (MP4 or WebM with H.264, VP8, VP9, AV1). An XviD AVI,
an HEVC MOV or a Matroska file shows a black player with no message. Transcoding the whole file on every click
would be slow and unbounded, so only the matched window is encoded (at most ``max_seconds``, ``max_height``
pixels high, ``max_bytes``, ``timeout`` seconds of wall time), once, into a size-bounded cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from clipvip.io import atomic_path
from clipvip.video.transcode import FrameEncoder

# (file suffixes, codecs) pairs a browser plays natively; anything else is transcoded.
BROWSER_PLAYABLE: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset({".mp4", ".m4v"}), frozenset({"h264", "av1", "vp9"})),
    (frozenset({".webm"}), frozenset({"vp8", "vp9", "av1"})),
    (frozenset({".ogv"}), frozenset({"theora", "vp8"})),
)
# Encoders tried in order: (codec, container format, suffix, MIME type, muxer options).
ENCODERS: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    ("libx264", "mp4", ".mp4", "video/mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}),
    ("libvpx-vp9", "webm", ".webm", "video/webm", {}),
    ("libvpx", "webm", ".webm", "video/webm", {}),
)


class PlaybackError(RuntimeError):
    """A window that could not be transcoded; the message says why in one line (shown next to the frame strip)."""


@dataclass(frozen=True)
class TranscodeLimits:
    max_seconds: float = 30.0  # longest window encoded per request
    max_height: int = 480  # pixels; wider sources are scaled down, keeping the aspect ratio
    max_bytes: int = 32 * 2**20  # one encoded window
    timeout: float = 60.0  # wall seconds for one transcode
    cache_bytes: int = 512 * 2**20  # the whole cache folder; oldest entries are evicted first


def video_codec(path: str | os.PathLike) -> str:
    """The first video stream's codec name (``h264``, ``mpeg4`` for XviD, ...)."""
    with av.open(os.fspath(path)) as c:
        if not c.streams.video:
            raise PlaybackError(f"{path}: no video stream")
        return c.streams.video[0].codec_context.name


def browser_playable(path: str | os.PathLike) -> tuple[bool, str]:
    """(plays natively, why or what it is): by suffix and codec, since a browser's demuxer keys on both."""
    suffix = Path(path).suffix.lower()
    try:
        codec = video_codec(path)
    except (av.error.FFmpegError, PlaybackError) as e:
        return False, f"cannot read the file: {e}"
    for suffixes, codecs in BROWSER_PLAYABLE:
        if suffix in suffixes and codec in codecs:
            return True, f"{codec} in {suffix}"
    return False, f"{codec} in {suffix or 'a file without suffix'} does not play in browsers"


def available_encoder() -> tuple[str, str, str, str, dict[str, str]] | None:
    """The first of ``ENCODERS`` this PyAV's FFmpeg has (None: only the frame strip is possible)."""
    return next((e for e in ENCODERS if e[0] in av.codecs_available), None)


class TranscodeCache:
    """Encoded windows in ``folder``, keyed by the source file (path, size, mtime), the window and the limits.
    One transcode runs at a time (each is CPU-bound; a second request for the same window waits and reuses it)."""

    def __init__(self, folder: str | os.PathLike, limits: TranscodeLimits | None = None) -> None:
        self.folder = Path(folder)
        self.limits = limits or TranscodeLimits()
        self._lock = threading.Lock()

    def window(self, start: float, end: float | None) -> tuple[float, float]:
        """The window actually encoded: ``[start, end]`` cut to ``max_seconds``."""
        start = max(0.0, float(start))
        stop = start + self.limits.max_seconds
        return start, min(stop, float(end)) if end is not None and end > start else stop

    def get(self, src: str | os.PathLike, start: float, end: float | None) -> tuple[Path, str]:
        """(file, MIME type) of the encoded window, transcoding it on first use."""
        enc = available_encoder()
        if enc is None:
            raise PlaybackError("this PyAV build has no H.264 (libx264) or VP8/VP9 (libvpx) encoder")
        codec, fmt, suffix, mime, opts = enc
        start, end = self.window(start, end)
        st = Path(src).stat()
        key = hashlib.sha1(
            f"{Path(src).resolve()}|{st.st_size}|{st.st_mtime_ns}|{start:.3f}|{end:.3f}|{self.limits}|{codec}".encode()
        ).hexdigest()[:24]
        dst = self.folder / f"{key}{suffix}"
        with self._lock:
            if not dst.is_file():
                self.folder.mkdir(parents=True, exist_ok=True)
                transcode_window(src, dst, start, end, self.limits, enc)
                self._evict(keep=dst)
            os.utime(dst)  # most recently used
        return dst, mime

    def _evict(self, keep: Path) -> None:
        files = sorted((f for f in self.folder.iterdir() if f.is_file()), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= self.limits.cache_bytes:
                break
            if f != keep:
                total -= f.stat().st_size
                f.unlink(missing_ok=True)


def transcode_window(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    start: float,
    end: float,
    limits: TranscodeLimits,
    encoder: tuple[str, str, str, str, dict[str, str]],
) -> Path:
    """Decode ``src`` from ``start`` to ``end`` seconds and encode it (video only, time starting at 0) into ``dst``
    atomically. Stops early, keeping what was encoded, when the output passes ``max_bytes``; gives up after
    ``timeout`` seconds."""
    codec, fmt, _, _, mux_opts = encoder
    deadline = time.monotonic() + limits.timeout
    try:
        with av.open(os.fspath(src)) as inp, atomic_path(dst) as tmp:
            vs = inp.streams.video[0]
            vs.thread_type = "AUTO"
            h0, w0 = vs.codec_context.height, vs.codec_context.width
            scale = min(1.0, limits.max_height / h0)
            w, h = max(2, round(w0 * scale / 2) * 2), max(2, round(h0 * scale / 2) * 2)
            rate = vs.average_rate or Fraction(25)
            if start > 0:
                inp.seek(int(start / vs.time_base) + (vs.start_time or 0), stream=vs, backward=True)
            codec_options = (
                {"preset": "veryfast", "crf": "23"}
                if codec == "libx264"
                else {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
            )
            with FrameEncoder(
                tmp, fmt, codec, float(rate), size=(w, h), codec_options=codec_options, mux_options=mux_opts
            ) as enc:
                t0 = vs.start_time or 0
                wanted = max(1, round((end - start) * float(rate)))
                for frame in inp.decode(vs):
                    if time.monotonic() > deadline:
                        raise PlaybackError(f"transcoding took over {limits.timeout:.0f} s")
                    if frame.pts is None:
                        continue
                    # the first frame at or after ``start`` opens the window; from there frames are counted, not
                    # timed, since AVI's packed B-frames carry shuffled pts (a later frame may claim an earlier time)
                    if enc.frames == 0 and float((frame.pts - t0) * vs.time_base) < start - 1e-3:
                        continue
                    if enc.frames >= wanted or enc.bytes > limits.max_bytes:
                        break
                    enc.encode(frame)  # decoder output is in display order: numbered at the stream's rate
                if enc.frames == 0:
                    raise PlaybackError(f"no frames between {start:.1f} s and {end:.1f} s")
    except av.error.FFmpegError as e:
        raise PlaybackError(f"{Path(src).name}: {e}") from e
    return Path(dst)
