"""Re-encode one video to a fixed frame rate and short side with PyAV: the benchmarks' "compressed videos".

WHY: every public video-text code base decodes its benchmark videos from a re-encoded copy, not the download:
HD-VILA / CLIP-ViP re-encode MSR-VTT to 6 fps (``ffmpeg -r 6``, size kept; XPretrain
``hd-vila/scripts/process_raw_video/compress_video.py``), CLIP4Clip to 3 fps with the short side scaled to 224
(ArrowLuo/CLIP4Clip ``preprocess/compress_video.py``). A 12-frame uniform sample then decodes a few small frames
instead of hundreds of full-size ones. This module does the same with PyAV (no ffmpeg binary needed), so that
``clipvip prepare`` and the corpus builder share ONE re-encoder.

Frame-rate conversion follows ``ffmpeg -r`` (constant frame rate): output frame k shows the source frame nearest
in time to ``start + k / fps`` (frames are dropped or repeated). Display-matrix rotation (phone videos) is applied
to the pixels, so the output needs no rotation metadata. Audio is dropped (``-map 0:v`` in CLIP4Clip's script).
The output is written to a temporary file and moved into place, so a crash never leaves a half-written video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from clipvip.io import atomic_path
from clipvip.video.pyav_stream import frame_rotation, open_container, pick_stream
from clipvip.video.sampling import DEFAULT_TIMEOUT, VideoDecodeError

# container format and video codec per output suffix (the temp file has no telling suffix, so name them)
_OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
}


class TranscodeError(VideoDecodeError):
    """A source that could not be re-encoded (unreadable, no frames in the window); ``path`` and ``reason`` kept."""


@dataclass(frozen=True)
class TranscodeResult:
    """What was written: frame count, size and rate of the output, and its duration in seconds."""

    path: str
    frames: int
    width: int
    height: int
    fps: float
    duration: float


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side`` (aspect kept, both even, as H.264 needs);
    ``None`` keeps the size (only rounded down to even). Like CLIP4Clip's scale filter, small videos are scaled up."""
    if short_side is None:
        return max(2, width - width % 2), max(2, height - height % 2)
    if short_side < 2:
        raise ValueError(f"short_side must be >= 2, got {short_side}")
    scale = short_side / min(width, height)

    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    return (
        (short_side - short_side % 2, even(height * scale))
        if width <= height
        else (
            even(width * scale),
            short_side - short_side % 2,
        )
    )


class FrameEncoder:
    """Frames in, one video out: the single H.264/VP9 writer of ``transcode`` and the corpus cutter.

    ``target`` is a path or a binary file object (an in-memory clip). Frames are re-timed to ``0, 1, 2...`` at
    ``rate``; the output size is ``size`` when given, else fixed by the first frame (``short_side`` applied with
    ``output_size``). ``rotation``: degrees written as display-matrix metadata (for frames kept unrotated).
    ``codec_options`` replace the default x264 ``crf``/``preset`` (e.g. VP9's realtime settings); ``mux_options``
    go to the container (e.g. fragmented MP4). ``bytes`` counts what was muxed, for callers with a size cap."""

    def __init__(
        self,
        target: str | os.PathLike | Any,
        fmt: str,
        codec: str,
        rate: float,
        short_side: int | None = None,
        *,
        crf: int = 23,
        preset: str = "veryfast",
        threads: int = 1,
        rotation: int = 0,
        size: tuple[int, int] | None = None,
        codec_options: dict[str, str] | None = None,
        mux_options: dict[str, str] | None = None,
    ) -> None:
        self.out = av.open(
            target if hasattr(target, "write") else str(target), mode="w", format=fmt, options=mux_options or {}
        )
        self.codec, self.short_side, self.rotation = codec, short_side, rotation
        self.fixed_size, self.codec_options = size, codec_options
        self.bytes = 0
        self.rate = Fraction(rate).limit_denominator(1001)
        self.crf, self.preset, self.threads = crf, preset, threads
        self.stream: Any = None
        self.size = (0, 0)
        self.frames = 0

    def _open_stream(self, width: int, height: int) -> None:
        self.size = self.fixed_size or output_size(width, height, self.short_side)
        st = self.out.add_stream(self.codec, rate=self.rate)
        st.width, st.height = self.size
        st.pix_fmt = "yuv420p"
        st.codec_context.thread_count = self.threads
        st.codec_context.time_base = 1 / self.rate
        st.options = self.codec_options or (
            {"crf": str(self.crf), "preset": self.preset} if self.codec == "libx264" else {"crf": str(self.crf)}
        )
        if self.rotation:
            st.set_display_rotation(self.rotation)
        self.stream = st

    def encode(self, frame: av.VideoFrame) -> None:
        """Scale (bicubic) to the output size and append one frame."""
        if self.stream is None:
            self._open_stream(frame.width, frame.height)
        if (frame.width, frame.height) != self.size or frame.format.name != "yuv420p":
            frame = frame.reformat(width=self.size[0], height=self.size[1], format="yuv420p", interpolation="BICUBIC")
        frame.pts, frame.time_base = self.frames, 1 / self.rate  # FFmpeg keeps its own reference: reuse is safe
        for packet in self.stream.encode(frame):
            self.bytes += packet.size
            self.out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the container."""
        if self.stream is not None:
            for packet in self.stream.encode():
                self.bytes += packet.size
                self.out.mux(packet)
        self.out.close()

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def transcode(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    fps: float | None,
    short_side: int | None,
    start: float | None = None,
    end: float | None = None,
    *,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
) -> TranscodeResult:
    """Re-encode ``src`` to ``dst`` (.mp4 / .mkv with H.264, .webm with VP9) at ``fps`` frames per second (None:
    the source's average rate) with the short side scaled to ``short_side`` (None: size kept), keeping only
    ``[start, end)`` seconds when given (a clip of a longer video). ``crf`` / ``preset``: x264 quality and speed
    (23 is FFmpeg's default quality; "veryfast" instead of FFmpeg's "medium" because benchmark copies are read,
    not archived). ``threads``: codec threads (1 when many videos run in parallel). Raises ``TranscodeError``."""
    src, dst = os.fspath(src), Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in _OUTPUT_FORMATS:
        raise ValueError(f"{dst}: output must end in one of {sorted(_OUTPUT_FORMATS)}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{src}: empty window [{start}, {end})")
    fmt, codec = _OUTPUT_FORMATS[suffix]
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open_container(src, timeout) as container:
            stream = pick_stream(container, src)
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            stream.codec_context.thread_count = threads
            rate = fps or float(stream.average_rate or stream.guessed_rate or 25)
            if start:
                try:
                    container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    pass  # a format without seeking: decode from the beginning, frames before start are dropped
            with atomic_path(dst) as tmp:
                result = _encode(container, stream, tmp, fmt, codec, rate, short_side, start, end, crf, preset, threads)
                if result[0] == 0:  # nothing was muxed: raising here removes the temporary file
                    window = (
                        ""
                        if start is None and end is None
                        else f" in [{start or 0:g}, {'end' if end is None else format(end, 'g')})"
                    )
                    raise TranscodeError(src, f"no video frames{window}")
    except VideoDecodeError as e:
        raise TranscodeError(e.path, e.reason) from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise TranscodeError(src, f"cannot re-encode: {e}") from None
    frames, w, h = result
    return TranscodeResult(str(dst), frames, w, h, rate, frames / rate)


def _encode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    tmp: Path,
    fmt: str,
    codec: str,
    rate: float,
    short_side: int | None,
    start: float | None,
    end: float | None,
    crf: int,
    preset: str,
    threads: int,
) -> tuple[int, int, int]:
    """Decode -> pick frames on the output clock -> scale -> encode; returns (frames written, width, height)."""
    step = 1.0 / rate
    t0: float | None = start  # output clock origin: the window start, else the first frame's time
    written = 0
    prev: av.VideoFrame | None = None
    prev_t = 0.0
    in_window = False  # a frame inside [start, end) was seen (a window past the video's end has none)
    with FrameEncoder(tmp, fmt, codec, rate, short_side, crf=crf, preset=preset, threads=threads) as enc:

        def emit(frame: av.VideoFrame) -> None:
            nonlocal written
            rot = frame_rotation(frame)
            if rot:  # rotate the pixels (display matrix counter-clockwise); the encoder then scales the upright frame
                arr = np.rot90(frame.to_ndarray(format="rgb24"), k=rot)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            enc.encode(frame)
            written += 1

        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            if start is not None and t < start - step / 2:
                prev, prev_t = frame, t  # a frame before the window may still be the nearest to its first tick
                continue
            if end is not None and t >= end + step / 2:
                break
            if t0 is None:
                t0 = t
            in_window = True
            if prev is not None:
                # every output tick nearer to prev than to this frame shows prev
                while t0 + written * step <= (prev_t + t) / 2 and (end is None or t0 + written * step < end):
                    emit(prev)
            prev, prev_t = frame, t
        if prev is not None and t0 is not None and in_window:
            # the last source frame lasts one source frame period (not past ``end``)
            last = max(prev_t + 1.0 / float(stream.average_rate or rate), t0 + step / 2)
            last = min(last, end) if end is not None else last
            while t0 + written * step < last:
                emit(prev)
    return written, enc.size[0], enc.size[1]
