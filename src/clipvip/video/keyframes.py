"""The keyframe index: every frame's pts and the keyframes' pts, from a demux-only pass (cheap: no decoding).

Header frame counts and ``fps * duration`` are never trusted; the index is what sampling counts frames in and
what decoding seeks by. A stream whose packets cannot identify frames (no time base, packets without pts,
duplicate pts, no keyframe) raises :class:`TimestampsUnusable` so the reader counts decoded frames instead.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import av

from clipvip.video.backend import Deadline
from clipvip.video.pyav_stream import TimestampsUnusable
from clipvip.video.sampling import VideoDecodeError


@dataclass
class KeyframeIndex:
    pts: list[int]  # all frame pts in presentation order (possibly restricted to a window)
    key_pts: list[int]  # keyframe pts, sorted
    origin: int  # pts of time 0
    time_base: float
    duration: float | None
    fps: float | None


def key_before(keys: list[int], t: int) -> int:
    """The last of the sorted keyframe pts ``keys`` at or before ``t`` (``keys[0]`` when there is none)."""
    i = bisect.bisect_right(keys, t) - 1
    return keys[max(i, 0)]


def _first_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream, deadline: Deadline) -> int:
    """pts of the first frame in presentation order (min over the first packets: B-frames reorder)."""
    first: list[int] = []
    for packet in container.demux(stream):
        deadline.check()
        if packet.pts is not None and not packet.is_corrupt:
            first.append(packet.pts)
        if len(first) >= 32:
            break
    if not first:
        raise TimestampsUnusable()
    return min(first)


def build_index(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: str,
    deadline: Deadline,
    start: float | None,
    end: float | None,
) -> KeyframeIndex:
    """Demux (no decoding) to list every frame's pts and the keyframes (within [start, end] if given)."""
    tb = float(stream.time_base) if stream.time_base else None
    if tb is None:
        raise TimestampsUnusable()
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
                    raise TimestampsUnusable()  # packets without timestamps: only counting output frames works
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
        raise TimestampsUnusable()  # duplicate timestamps: pts cannot identify frames
    if not keys:
        raise TimestampsUnusable()
    if origin is None:
        origin = pts[0] if pts else 0  # time 0 = the first frame (not the container's start_time)
    if duration is None and pts:
        duration = (pts[-1] - origin) * tb
    return KeyframeIndex(pts=pts, key_pts=keys, origin=origin, time_base=tb, duration=duration, fps=fps)
