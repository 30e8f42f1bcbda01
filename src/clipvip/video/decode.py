"""Decoding the wanted frames with PyAV, two ways.

* :func:`decode_by_pts` (the fast path): frames are identified by their pts from the keyframe index; for every
  wanted frame it seeks to the last keyframe at or before it when that skips work, and frames nobody references
  and nobody wants are not decoded at all. If timestamps turn out unusable (e.g. AVI with packed B-frames:
  decoded pts are not monotonic) or seeking lands after the frame asked for, it raises
  :class:`TimestampsUnusable` / :class:`SeekUnreliable`, so it never returns the wrong frames silently. A seek
  that lands *before* the keyframe asked for (MP4 seeks by its sync-sample table, which lists fewer keyframes
  than the packets' key flags, e.g. H.264 scene-cut I-frames) switches that read to decoding through, and every
  re-seek goes to a later keyframe than the last one, so the seek loop always makes progress.
* :func:`decode_by_count` (the fallback): a sequential decode where the i-th good decoded frame is frame i.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import av
import numpy as np

from clipvip.video.backend import Deadline
from clipvip.video.keyframes import key_before
from clipvip.video.pyav_stream import (
    NO_SEEK_FORMATS,
    PTS_PER_PACKET_FORMATS,
    Convert,
    Opened,
    Opener,
    SeekUnreliable,
    TimestampsUnusable,
    container_format,
)
from clipvip.video.sampling import VideoDecodeError


def decode_by_pts(
    opener: Opener,
    targets: list[int],
    keys: list[int],
    deadline: Deadline,
    convert: Convert,
    allow_seek: bool,
    opened: Opened | None = None,
) -> dict[int, np.ndarray]:
    """Decode the frames with the given pts (sorted, unique), seeking to the keyframe before each one when
    that skips work. Raises :class:`SeekUnreliable` when seeking misbehaves and :class:`TimestampsUnusable`
    when the stream's timestamps cannot identify frames. ``opened``: a container already demuxed by the index
    pass (saves an open; only for formats in ``PTS_PER_PACKET_FORMATS``): it is always seeked first, and always
    closed."""
    out: dict[int, np.ndarray] = {}
    pos = 0
    wanted = set(targets)
    container, stream = opened if opened is not None else opener()
    cc = stream.codec_context
    try:
        fmt = container_format(container)
        if allow_seek and fmt in NO_SEEK_FORMATS:
            allow_seek = False
        skip_unwanted = fmt in PTS_PER_PACKET_FORMATS
        fresh = opened is None  # a reused container sits at the end of the index pass: seek even to keys[0]
        # Progress guarantee: every pass of this loop either returns, ends it, or re-seeks to a keyframe strictly
        # after the one this pass started from (see the `break` below), so it runs at most len(keys) + 1 times.
        while pos < len(targets):
            deadline.check()
            seek_to = key_before(keys, targets[pos])
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
                        raise TimestampsUnusable()
                    if frame.is_corrupt:
                        if p >= targets[pos]:
                            raise TimestampsUnusable()  # a wanted frame is damaged: count the good frames instead
                        continue
                    if last is not None and p < last:
                        raise TimestampsUnusable()  # output pts not monotonic (e.g. packed B-frames in AVI)
                    if first and seeked and p > targets[pos]:
                        raise SeekUnreliable()  # seek landed after the frame we want
                    if first and seeked and p < seek_to:
                        # Seek landed before the keyframe asked for: the demuxer seeks by its own index (e.g. the
                        # MP4 sync-sample table), which need not list every packet flagged key (the H.264 parser
                        # flags non-IDR I-frames too). Re-seeking would land here again, so decode through.
                        allow_seek = False
                    if p > targets[pos]:
                        raise TimestampsUnusable()  # the decoder never produced a frame the packets promised
                    first = False
                    last = p
                    if p == targets[pos]:
                        out[p] = convert(frame)
                        pos += 1
                    if pos == len(targets):
                        return out
                if allow_seek and last is not None and key_before(keys, targets[pos]) > max(last, seek_to):
                    advanced = True
                    break  # a later keyframe lies between here and the next target: seek, don't decode through
            fresh = False
            if not advanced:
                break  # end of stream with targets left
    finally:
        container.close()
    raise TimestampsUnusable()


def decode_by_count(
    opener: Opener,
    pick: Callable[[int], np.ndarray],
    n_hint: int | None,
    deadline: Deadline,
    convert: Convert,
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
            raise VideoDecodeError(deadline.path, "no decodable frames")
        idx = [a + int(i) for i in pick(b - a + 1)]
        _, got = run(set(idx), count_only=False)
        if all(i in got for i in idx):
            return [got[i] for i in idx], [round(i / rate, 6) for i in idx]
        n = run(set(), count_only=True)[0]  # the hint was wrong: count, then retry once
    raise VideoDecodeError(deadline.path, "no decodable frames")
