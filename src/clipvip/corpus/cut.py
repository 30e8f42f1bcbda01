"""Cutting clips out of a source video with PyAV (FFmpeg): stream copy or re-encode, into memory (mp4 bytes).

Two ways, one API (:class:`VideoCutter` opens a source once and cuts many spans):

* ``copy``: the compressed packets from the keyframe at or before the start up to the end, remuxed without
  decoding (what HD-VILA-100M's own ``cut_videos.py`` does with ``ffmpeg -ss -c copy``). It costs almost nothing
  and keeps the source quality, but a clip can only START on a keyframe, and with B-frames it may END a few
  frames late (frames needed as references are kept). It is "exact enough" when both ends are within
  ``tolerance`` (default: one source frame).
* ``reencode``: decode from that keyframe, sample at ``fps`` (each output frame is the last source frame shown
  at its time), scale to ``short_side`` and encode H.264. 3 fps is the official CLIP-ViP pretraining input
  (microsoft/XPretrain ``CLIP-ViP/src/configs/pretrain/pretrain_vip_base_32.json`` reads ``video_clips_3fps``
  stored at ``video_res`` 240x320 and resizes to 224); the default short side 224 is what the model sees
  (``short_side=240`` reproduces the stored size). The clip starts on the source frame shown at the start time
  and lasts ``ceil((end - start) * fps)`` output frames: exact to one output frame.
* ``auto``: ``copy`` where it is exact enough, else ``reencode``. Clips in one corpus then differ in size and fps.

Default (``CutOptions()``): ``reencode``. The corpus is for training, and training reads 12 frames at 224: a
3-fps, 224-pixel clip holds every frame the model can use, is exact at both ends, is the same for every clip, and
its size does not grow with the source's resolution (about 16-17 KB per second of natural video against 30-64 KB/s
for copies of 240p-256p sources; BENCHMARKS.md), which matters at 100M clips. It costs CPU: decoding the source
from the keyframe dominates (about 0.8 CPU-s per 12-s clip of 720p30 against a few ms for a copy). Use ``copy``
for throughput or when the corpus must keep the source pixels, ``auto`` for copies where they are exact.
"""

from __future__ import annotations

import bisect
import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from clipvip.video.transcode import FrameEncoder, output_size

CutMode = Literal["reencode", "copy", "auto"]
CUT_MODES: tuple[str, ...] = ("reencode", "copy", "auto")


class CutError(ValueError):
    """A span that cannot be cut out of a source (the message names the file and the span)."""


@dataclass(frozen=True)
class CutOptions:
    mode: CutMode = "reencode"
    fps: float = 3.0
    short_side: int = 224
    tolerance: float | None = None  # seconds a copied clip may be off at either end; None: one source frame
    crf: int = 23
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.mode not in CUT_MODES:
            raise ValueError(f"cut mode {self.mode!r}: expected one of {', '.join(CUT_MODES)}")
        if not self.fps > 0 or self.short_side < 2:
            raise ValueError(f"need fps > 0 and short_side >= 2, got fps={self.fps} short_side={self.short_side}")


@dataclass(frozen=True)
class CutClip:
    """An mp4 in memory; ``start``/``end``: the source span it really shows; ``method``: copy or reencode."""

    data: bytes
    start: float
    end: float
    method: str
    frames: int


class VideoCutter:
    """Cuts spans (seconds from the first frame) out of one source; use as a context manager."""

    def __init__(self, path: str | Path, options: CutOptions = CutOptions()) -> None:
        self.path, self.options = str(path), options
        try:
            self.container = av.open(self.path)
        except (av.FFmpegError, OSError) as e:
            raise CutError(f"{self.path}: cannot open ({e})") from None
        streams = [s for s in self.container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            self.container.close()
            raise CutError(f"{self.path}: no video stream")
        self.stream = streams[0]
        self.stream.codec_context.thread_type = "AUTO"  # before the decoder opens (first decode)
        self._size: tuple[int, int] | None = None  # output size and rotation, from the first decoded frame
        self._rotation = 0
        self._source_ended = False
        self.tb = self.stream.time_base
        self.origin = self.stream.start_time or 0
        rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.frame_seconds = float(1 / rate)
        d = self.container.duration
        self.duration = d / 1e6 if d else None

    def __enter__(self) -> VideoCutter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _pts(self, seconds: float) -> int:
        return self.origin + int(round(seconds / self.tb))

    def _sec(self, pts: int) -> float:
        return float((pts - self.origin) * self.tb)

    def cut(self, start: float, end: float) -> CutClip:
        """The span ``[start, end)`` as an mp4, by ``options.mode`` (module docstring)."""
        if not 0 <= start < end:
            raise CutError(f"{self.path}: bad span {start:.3f}-{end:.3f} s")
        if self.duration is not None and start >= self.duration:
            raise CutError(f"{self.path}: span {start:.3f}-{end:.3f} s starts after the end ({self.duration:.3f} s)")
        mode = self.options.mode
        try:
            if mode in ("copy", "auto"):
                clip = self._copy(start, end, strict=mode == "auto")
                if clip is not None:
                    return clip
            return self._reencode(start, end)
        except av.FFmpegError as e:
            raise CutError(f"{self.path}: cutting {start:.3f}-{end:.3f} s failed ({e})") from None

    # ------------------------------------------------------------------------------------------ stream copy

    def _packets(self, start: float, end: float) -> list[av.Packet]:
        """Packets of the video stream, in decode order, from the keyframe at or before ``start``: every frame
        shown before ``end``, the frames after it that those reference (B-frames are decoded after the later
        frame they use), and the frames shown between ``end`` and that last reference, so the clip has no gap."""
        start_pts, end_pts = self._pts(start), self._pts(end)
        self.container.seek(start_pts, stream=self.stream, backward=True, any_frame=False)
        packets = self._video_packets()
        head: list[av.Packet] = []
        self._source_ended = True
        for packet in packets:
            if not head and not packet.is_keyframe:
                continue
            if not head and packet.pts > start_pts + 1 and start_pts > self.origin:
                return self._scan_packets(start, end)  # the seek overshot (broken index): scan from the origin
            if head and packet.is_keyframe and packet.pts <= start_pts:
                head = []  # a later keyframe that is still at or before the start
            if head and packet.pts >= end_pts and (packet.dts is None or packet.dts >= end_pts):
                head.append(packet)  # decoded and shown after the end: the lookahead below starts here
                self._source_ended = False
                break
            head.append(packet)
        return self._trim(head, packets, end_pts)

    def _video_packets(self):  # noqa: ANN202 - a generator of av.Packet
        for packet in self.container.demux(self.stream):
            if packet.size and packet.pts is not None:
                yield packet

    def _scan_packets(self, start: float, end: float) -> list[av.Packet]:
        self.container.seek(self.origin, stream=self.stream, backward=True, any_frame=False)
        start_pts, end_pts = self._pts(start), self._pts(end)
        packets = self._video_packets()
        head: list[av.Packet] = []
        self._source_ended = True
        for packet in packets:
            if packet.is_keyframe and packet.pts <= start_pts:
                head = []
            if not head and not packet.is_keyframe:
                continue
            head.append(packet)
            if packet.pts >= end_pts and (packet.dts is None or packet.dts >= end_pts):
                self._source_ended = False
                break
        return self._trim(head, packets, end_pts)

    @staticmethod
    def _trim(head: list[av.Packet], rest, end_pts: int) -> list[av.Packet]:  # noqa: ANN001 - packet iterator
        if not head:
            return []
        key_pts = head[0].pts
        head = [p for p in head if p.pts >= key_pts]  # leading frames of an open GOP need the GOP before
        wanted = [i for i, p in enumerate(head) if p.pts < end_pts]
        if not wanted:
            return head[:1]
        last = wanted[-1]
        refs = [p.pts for p in head[:last] if p.pts >= end_pts]
        if not refs:
            return head[: last + 1]
        top = max(refs)  # the last frame a wanted frame may reference: keep every frame shown up to it
        out = head[: last + 1] + [p for p in head[last + 1 :] if p.pts < top]
        if head[-1].pts < top:
            for packet in rest:
                if packet.pts > top:
                    break
                if packet.pts >= key_pts:
                    out.append(packet)
        return out

    def _copy(self, start: float, end: float, strict: bool) -> CutClip | None:
        packets = self._packets(start, end)
        if not packets:
            raise CutError(f"{self.path}: no frames in {start:.3f}-{end:.3f} s")
        key_pts = packets[0].pts
        last = max(p.pts for p in packets)
        real_start = self._sec(key_pts)
        real_end = self._sec(last) + self.frame_seconds
        tol = self.options.tolerance if self.options.tolerance is not None else self.frame_seconds + 1e-6
        if strict and (start - real_start > tol or real_end - end > tol):
            return None
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as out:
            ostream = out.add_stream_from_template(self.stream)
            for p in packets:
                p.pts -= key_pts
                if p.dts is not None:
                    p.dts -= key_pts
                p.stream = ostream
                out.mux(p)
        return CutClip(buf.getvalue(), real_start, real_end, "copy", len(packets))

    # ------------------------------------------------------------------------------------------- re-encode

    def _decode(self, packets: list[av.Packet], wanted: set[int], skip: bool) -> dict[int, av.VideoFrame]:
        """The wanted frames, scaled; frames nobody wants or references are not decoded at all (FFmpeg's
        ``skip_frame=NONREF`` per packet: at 3 of 30 fps most B-frames are skipped)."""
        cc = self.stream.codec_context
        cc.flush_buffers()
        out: dict[int, av.VideoFrame] = {}

        def keep(frames: list[av.VideoFrame]) -> None:
            for f in frames:
                if f.pts in wanted and f.pts not in out:
                    if self._size is None:
                        self._size = output_size(f.width, f.height, self.options.short_side)
                        self._rotation = int(round(f.rotation or 0)) % 360  # display matrix: carried over
                    out[f.pts] = f.reformat(width=self._size[0], height=self._size[1], format="yuv420p")

        for p in packets:
            cc.skip_frame = "NONREF" if skip and p.pts not in wanted else "DEFAULT"
            keep(self.stream.decode(p))
        cc.skip_frame = "DEFAULT"
        keep(self.stream.decode(None))
        cc.flush_buffers()
        return out

    def _reencode(self, start: float, end: float) -> CutClip:
        o = self.options
        n_out = max(1, math.ceil((end - start) * o.fps - 1e-6))
        times = [start + k / o.fps for k in range(n_out)]
        packets = self._packets(start, end)
        if not packets:
            raise CutError(f"{self.path}: no frames in {start:.3f}-{end:.3f} s")
        shown = sorted({p.pts for p in packets})
        secs = [self._sec(p) for p in shown]
        picks: list[int] = []  # sample and hold: output time k shows the last frame at or before it
        for t in times:
            if self._source_ended and t >= secs[-1] + self.frame_seconds - 1e-6:
                break  # the source ends: its last frame is shown for one frame duration
            picks.append(shown[max(0, bisect.bisect_right(secs, t + 1e-6) - 1)])
        if not picks:
            raise CutError(f"{self.path}: no frames in {start:.3f}-{end:.3f} s")
        frames = self._decode(packets, set(picks), skip=True)
        if any(p not in frames for p in picks):  # a decoder that ignores skip_frame or renumbers: decode all
            frames = self._decode(packets, set(picks), skip=False)
        missing = [p for p in picks if p not in frames]
        if missing:
            raise CutError(f"{self.path}: frame at {self._sec(missing[0]):.3f} s did not decode")
        picked = [frames[p] for p in picks]
        buf = io.BytesIO()
        with FrameEncoder(
            buf, "mp4", "libx264", o.fps, o.short_side, crf=o.crf, preset=o.preset, rotation=self._rotation
        ) as enc:
            for f in picked:
                enc.encode(f)
        return CutClip(buf.getvalue(), start, start + len(picked) / o.fps, "reencode", len(picked))
