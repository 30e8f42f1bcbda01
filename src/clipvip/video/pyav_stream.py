"""PyAV building blocks of the PyAV backend: open a file, choose its video stream, set up the decoder, convert a
decoded frame, and the two ways the fast (pts + seek) path can turn out unusable for a file.

* **Several video streams**: the one with the most pixels (width x height) is read; ties go to the first.
  Cover-art streams (``attached_pic``) are never read as video.
* **Conversion**: only wanted frames are converted, and conversion + resize happen in one call to FFmpeg's scaler
  (``reformat``, bicubic). Rotation metadata (display matrix) is applied (multiples of 90 degrees).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from clipvip.video.sampling import ResizeMode, VideoDecodeError

Opened = tuple[av.container.InputContainer, av.video.stream.VideoStream]
Opener = Callable[[], Opened]
Convert = Callable[[av.VideoFrame], np.ndarray]

# containers whose seeking is approximate (no index): decode them front to back instead
NO_SEEK_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "m4v"})
# containers where a packet's pts is the pts of the frame it codes (not so in AVI: packed B-frames), so
# unwanted non-reference frames can be skipped by packet; they also seek reliably by their index
PTS_PER_PACKET_FORMATS = frozenset({"mov", "matroska"})


class FastPathUnusable(Exception):
    """The fast path (frames identified by pts, reached by seeking) cannot be trusted for this file."""


class TimestampsUnusable(FastPathUnusable):
    """The stream's timestamps cannot identify frames (missing, duplicated, not monotonic, damaged frames):
    only a sequential decode that counts output frames is right."""


class SeekUnreliable(FastPathUnusable):
    """Seeking landed after the frame asked for: timestamps are fine, decode front to back by pts."""


def container_format(container: av.container.InputContainer) -> str:
    """The demuxer's short name ("mov,mp4,m4a,..." -> "mov")."""
    return container.format.name.split(",")[0]


def is_url(path: str) -> bool:
    return "://" in path


def open_container(path: str, timeout: float, data: bytes | None = None) -> av.container.InputContainer:
    """Open ``path`` (or its bytes ``data``), every failure a :class:`VideoDecodeError` naming the file."""
    if data is not None:
        if not data:
            raise VideoDecodeError(path, "file is empty")
        try:
            return av.open(io.BytesIO(data), timeout=timeout)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(path, f"cannot open: {e}") from e
    if not is_url(path):
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


def pick_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
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


def setup_decoder(stream: av.video.stream.VideoStream, threads: int | None) -> None:
    """``threads == 1``: no decoder threads (frame threading would start some); otherwise FFmpeg's choice."""
    cc = stream.codec_context
    if threads == 1:
        cc.thread_type = "NONE"
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = threads or 0


def frame_rotation(frame: av.VideoFrame) -> int:
    """Display rotation in quarter turns (0-3); rotation is per-frame side data in FFmpeg >= 7."""
    try:
        return int(round((frame.rotation or 0) / 90.0)) % 4
    except (AttributeError, ValueError, TypeError):
        return 0


def convert_frame(
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
    rot = frame_rotation(frame)
    if rot:
        arr = np.rot90(arr, k=rot)
    return np.ascontiguousarray(arr)
