"""The PyAV (FFmpeg) backend of the decoder seam (:class:`~clipvip.video.backend.VideoDecoder`).

How one read goes:

1. **Index** (``keyframes``): a demux-only pass lists every frame's pts and the keyframes; sampling counts
   frames there. MP4/MOV/Matroska then decode from the container the index pass opened (one open per read);
   the other formats are reopened (their seeking is what the fallbacks are for).
2. **Decode by pts** (``decode``): only the wanted frames, seeking past GOPs, decoder threads on. When the
   wanted frames span several keyframe intervals and ``threads != 1``, runs of whole GOPs decode concurrently
   (``gop_parallel``), bit-identical to ``threads=1``.
3. **Fallbacks**: if seeking lands after the frame asked for, the same frames are decoded front to back by pts;
   if the timestamps cannot identify frames, a sequential decode counts output frames. Either way the frames
   returned are the picked ones, never silently others.

Every failure is a :class:`VideoDecodeError` naming the file and the reason; a wall-clock deadline is checked
between packets (``timeout``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from clipvip.video.backend import Deadline, DecodedFrames, FrameRequest
from clipvip.video.decode import decode_by_count, decode_by_pts
from clipvip.video.gop_parallel import decode_parallel, parallel_workers, plan_chunks
from clipvip.video.keyframes import KeyframeIndex, build_index
from clipvip.video.pyav_stream import (
    PTS_PER_PACKET_FORMATS,
    Convert,
    FastPathUnusable,
    Opened,
    SeekUnreliable,
    container_format,
    convert_frame,
    frame_rotation,
    is_url,
    open_container,
    pick_stream,
    setup_decoder,
)
from clipvip.video.sampling import VideoDecodeError, VideoInfo


class PyAVDecoder:
    """Decode with PyAV: exact frames in presentation order, only the wanted ones (see the module docstring)."""

    def decode(self, path: str, data: bytes | None, request: FrameRequest) -> DecodedFrames:
        read = _Read(path, data, request)
        with _as_decode_error(path, request.timeout):
            try:
                arrays, stamps, duration = read.by_pts()
            except FastPathUnusable:
                arrays, stamps, duration = read.by_count()
        frames = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return DecodedFrames(frames=frames, timestamps=stamps, duration=duration)

    def probe(self, path: str, timeout: float) -> VideoInfo:
        deadline = Deadline(path, timeout)
        container = open_container(path, timeout)
        try:
            stream = pick_stream(container, path)
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
            try:
                index = build_index(container, stream, path, deadline, None, None)
                n, duration, fps = len(index.pts), index.duration, index.fps
            except FastPathUnusable:
                n = stream.frames
                duration = container.duration / 1e6 if container.duration is not None else None
                fps = float(stream.average_rate) if stream.average_rate else None
            rotation = _first_frame_rotation(container, stream, deadline, rewind=bool(n))
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


@contextmanager
def _as_decode_error(path: str, timeout: float) -> Iterator[None]:
    """Anything FFmpeg, the OS or PyAV raises while reading becomes one :class:`VideoDecodeError`."""
    try:
        yield
    except VideoDecodeError:
        raise
    except av.error.ExitError as e:
        raise VideoDecodeError(path, f"timed out after {timeout:g} s (reading)") from e
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed: {e}") from e
    except (MemoryError, OSError, ValueError, RuntimeError, IndexError) as e:
        raise VideoDecodeError(path, f"decoding failed: {type(e).__name__}: {e}") from e


class _Read:
    """One read of one file: the request, its deadline, and how to open the file and convert its frames."""

    def __init__(self, path: str, data: bytes | None, request: FrameRequest) -> None:
        self.path, self.data, self.request = path, data, request
        self.deadline = Deadline(path, request.timeout)
        self.convert = self.make_convert()  # the sequential paths share one scaler context

    def open(self) -> Opened:
        return self.open_with(self.request.threads)

    def open_with(self, decoder_threads: int | None) -> Opened:
        """The file opened, its stream chosen and its decoder set up."""
        container = open_container(self.path, self.request.timeout, self.data)
        try:
            stream = pick_stream(container, self.path)
            setup_decoder(stream, decoder_threads)
        except BaseException:
            container.close()
            raise
        return container, stream

    def make_convert(self) -> Convert:
        reformatter = VideoReformatter()  # keeps FFmpeg's scaler context between the frames of one file
        size, resize = self.request.size, self.request.resize

        def convert(frame: av.VideoFrame) -> np.ndarray:
            return convert_frame(frame, size, resize, reformatter)

        return convert

    def by_pts(self) -> tuple[list[np.ndarray], list[float], float | None]:
        """The fast path: index, pick, decode the picked pts. Raises :class:`FastPathUnusable` subclasses."""
        start, end = self.request.start, self.request.end
        container, stream = self.open()
        # closes the container on any failure; the decoders close a reused one themselves (twice is harmless)
        with closing(container):
            index = build_index(container, stream, self.path, self.deadline, start, end)
            opened = (container, stream) if container_format(container) in PTS_PER_PACKET_FORMATS else None
            if opened is None:
                container.close()
            if not index.pts:
                where = "" if start is None and end is None else f" in window [{start}, {end}] s"
                raise VideoDecodeError(self.path, "no frames" + where)
            wanted = [index.pts[int(i)] for i in self.request.pick(len(index.pts))]
            got = self.decode_targets(sorted(set(wanted)), index, opened)
        stamps = [round((p - index.origin) * index.time_base, 6) for p in wanted]
        return [got[p] for p in wanted], stamps, index.duration

    def decode_targets(self, targets: list[int], index: KeyframeIndex, opened: Opened | None) -> dict[int, np.ndarray]:
        """Decode the target pts: runs of GOPs in parallel where that pays (only from a reusable container, of a
        local file or bytes), else one decoder; a seek that misbehaves is retried front to back, not seeking."""
        threads, keys = self.request.threads, index.key_pts
        chunks = [targets]
        if threads != 1 and opened is not None and (self.data is not None or not is_url(self.path)):
            chunks = plan_chunks(targets, keys, index.pts, parallel_workers(threads))
        try:
            if len(chunks) > 1:
                # the thread budget (threads, or the CPUs) is split over the runs: single-threaded decoders
                # when there are as many runs as CPUs (frame threading on top only costs CPU on a busy host)
                per_run = max(1, (threads or parallel_workers(None)) // len(chunks))
                return decode_parallel(chunks, self.open_with, keys, self.deadline, self.make_convert, opened, per_run)
            return decode_by_pts(self.open, targets, keys, self.deadline, self.convert, True, opened)
        except SeekUnreliable:
            return decode_by_pts(self.open, targets, keys, self.deadline, self.convert, allow_seek=False)

    def by_count(self) -> tuple[list[np.ndarray], list[float], float | None]:
        """The fallback when timestamps cannot identify frames: the i-th decoded frame is frame i."""
        container, stream = self.open()
        with closing(container):
            fps = float(stream.average_rate) if stream.average_rate else None
            n_hint = stream.frames or None
            duration = container.duration / 1e6 if container.duration is not None else None
        window = (self.request.start, self.request.end)
        arrays, stamps = decode_by_count(self.open, self.request.pick, n_hint, self.deadline, self.convert, fps, window)
        return arrays, stamps, duration


def _first_frame_rotation(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, deadline: Deadline, rewind: bool
) -> int:
    """Rotation in degrees; it is per-frame side data in FFmpeg >= 7, so decode the first frame only (0 when no
    frame decodes). Bounded: stops at the first frame, or at the deadline."""
    try:
        if rewind:
            container.seek(stream.start_time or 0, stream=stream, backward=True)
        for packet in container.demux(stream):
            deadline.check()
            frame = next(iter(packet.decode()), None)
            if frame is not None:
                return frame_rotation(frame) * 90
    except av.error.FFmpegError:
        pass
    return 0
