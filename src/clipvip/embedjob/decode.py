"""The decoding side of ``clipvip embed``: a sample -> uint8 clips + metadata rows, and a stream that decodes parts in
order on a thread pool, running ahead of the encoder ACROSS part boundaries.

WHY across parts: when a part's decoding starts only as the part's encoding starts, every part begins with the
encoder idle until a chunk is decoded, and ends with the decoders idle while the last chunk is encoded and the
part's files are written. Measured (bench_scale.py embed, a core per stage, parts of 50 short clips): 0.17 s of a
1.16 s job was that wait; in one 200-clip part the same code ran at 0.9x of the encoder alone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipvip.embedjob.inputs import PartSource, Sample, iter_samples


@dataclass
class DecodedChunk:
    """One chunk of a part after decoding: uint8 clips [n, T, 3, H, W] (None if nothing decoded), one metadata row
    per clip, the samples that failed, and whether it is the part's last chunk."""

    part: int
    index: int
    clips: np.ndarray | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    last: bool = False
    decode_seconds: float = 0.0


def _source(sample: Sample) -> str | bytes:
    """Bytes for shard members and fsspec URLs FFmpeg cannot open itself; else the path (FFmpeg reads http)."""
    if sample.data is not None:
        return sample.data
    p = sample.path
    if "://" in p and not p.startswith(("http://", "https://", "file://")):
        import fsspec

        with fsspec.open(p, "rb") as f:
            return f.read()
    return p


def decode_sample(sample: Sample, settings: dict[str, Any], timeout: float) -> tuple[list[np.ndarray], list[dict]]:
    """uint8 clips [T, 3, H, W] (one per window) and their metadata rows. Raises VideoDecodeError / OSError."""
    from clipvip.index.build import windows
    from clipvip.video import probe, read_frames

    nf, size, window = settings["num_frames"], settings["image_size"], settings["window"]
    src = _source(sample)
    name = sample.path if isinstance(src, bytes) else None
    duration = None
    if window is not None:
        if isinstance(src, bytes):
            duration = read_frames(src, 1, 16, timeout=timeout, threads=1, name=name).duration
        else:
            duration = probe(src, timeout=timeout).duration
    clips, rows = [], []
    for start, end in windows(duration, window, settings["stride"]):
        windowed = window is not None and duration is not None
        vf = read_frames(
            src,
            nf,
            size,
            start=start if windowed else None,
            end=end if windowed else None,
            timeout=timeout,
            threads=1,
            name=name,
        )
        duration = duration if duration is not None else vf.duration
        frames = vf.frames.numpy()
        if frames.shape[0] != nf:  # an image: a 1-frame video, repeated so it batches with videos
            frames = np.repeat(frames[:1], nf, axis=0)
        clips.append(frames)
        rows.append((start, end))
    return clips, [
        {
            "key": sample.key,
            "path": sample.path,
            "start": float(s),
            "end": float(e) if e is not None else (float(duration) if duration is not None else None),
            "duration": None if duration is None else float(duration),
            "caption": sample.caption,
        }
        for s, e in rows
    ]


def _timed_decode(sample: Sample, settings: dict[str, Any], timeout: float) -> tuple[Any, float]:
    t0 = time.perf_counter()
    try:
        return decode_sample(sample, settings, timeout), time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a bad sample is skipped and named, never fatal
        return e, time.perf_counter() - t0


def _pin(cpus: tuple[int, ...] | None) -> None:
    """Pin the calling thread (Linux ``sched_setaffinity(0)`` is per thread)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def decode_pool(workers: int, cpus: tuple[int, ...] | None = None) -> Executor:
    """``workers`` decode threads, each pinned to ``cpus`` when given. Threads, not processes: PyAV releases the GIL
    while FFmpeg decodes and scales, and decoded frames need no copy between processes (measured: spawned worker
    processes were slower on this box; forked ones can hang on a lock another thread held at fork time)."""
    return ThreadPoolExecutor(max(1, workers), initializer=_pin, initargs=(cpus,))


class DecodeStream:
    """Decoded chunks of ``parts`` (in that order), ``batch_size`` consecutive samples each, decoding up to
    ``depth`` samples ahead of the consumer, across part boundaries. ``chunks(part)`` must be called in order; each
    part yields at least one chunk, its last marked. A part whose consumer stopped early (an encoder error) has its
    leftover decodes dropped when the next part starts, and its samples not yet queued are skipped, never decoded."""

    def __init__(
        self,
        parts: list[tuple[int, PartSource]],
        settings: dict[str, Any],
        batch_size: int,
        timeout: float,
        pool: Executor,
        workers: int,
    ) -> None:
        self.order = [p for p, _ in parts]
        self.settings, self.batch_size, self.timeout, self.pool = settings, batch_size, timeout, pool
        self._items = ((p, i, s) for p, src in parts for i, s in enumerate(iter_samples(src)))
        self._ahead: deque[tuple[int, int, Sample, Future]] = deque()
        self._started: set[int] = set()
        self._current: int | None = None
        self._next = 0
        # two chunks ahead: while the consumer encodes chunk i, chunk i + 1 must already be decoding (measured: with
        # 2 * workers = 4 of an 8-clip chunk ahead, the encoder waited)
        self.depth = max(2 * max(1, workers), 2 * batch_size)

    def is_next(self, part: int) -> bool:
        return self._next < len(self.order) and self.order[self._next] == part

    def _fill(self) -> None:
        while len(self._ahead) < self.depth:
            item = next(self._items, None)
            if item is None:
                return
            p, i, sample = item
            if p in self._started and p != self._current:  # the rest of a part whose consumer stopped early
                continue
            self._ahead.append((p, i, sample, self.pool.submit(_timed_decode, sample, self.settings, self.timeout)))

    def chunks(self, part: int) -> Iterator[DecodedChunk]:
        if not self.is_next(part):
            raise RuntimeError(f"part {part} asked out of order (next: {self.order[self._next :][:1]})")
        self._next += 1
        while self._ahead and self._ahead[0][0] in self._started:  # an earlier part's leftovers
            self._ahead.popleft()[3].cancel()
        self._started.add(part)
        self._current = part
        chunk, clips = DecodedChunk(part, 0, None), []
        self._fill()
        while self._ahead and self._ahead[0][0] == part:
            _, i, sample, fut = self._ahead.popleft()
            self._fill()
            if i // self.batch_size != chunk.index:
                chunk.clips = np.stack(clips) if clips else None
                yield chunk
                chunk, clips = DecodedChunk(part, i // self.batch_size, None), []
            result, seconds = fut.result()
            chunk.decode_seconds += seconds
            if isinstance(result, Exception):
                reason = getattr(result, "reason", None) or f"{type(result).__name__}: {result}"
                chunk.failed.append({"file": sample.path, "reason": str(reason)})
            else:
                clips += result[0]
                chunk.rows += result[1]
        chunk.clips = np.stack(clips) if clips else None
        chunk.last = True
        yield chunk

    def cancel(self) -> None:
        """Drop what is queued (the job is over, or the plan changed)."""
        while self._ahead:
            self._ahead.popleft()[3].cancel()
