"""The decoding side of ``clipvip embed``: a chunk of samples -> uint8 clips + metadata rows, and a stream that
decodes parts in order on a pool of decoders, running ahead of the encoder ACROSS part boundaries.

WHY across parts: when a part's decoding starts only as the part's encoding starts, every part begins with the
encoder idle until a chunk is decoded, and ends with the decoders idle while the last chunk is encoded and the
part's files are written. Measured (bench_scale.py embed, a core per stage, parts of 50 short clips): 0.17 s of a
1.16 s job was that wait; in one 200-clip part the same code ran at 0.9x of the encoder alone.

WHY a chunk (``batch_size`` consecutive samples of a part) is the unit a decoder takes: it is the unit the encoder
takes, so a decoder in another process can write a whole encoder batch into one shared buffer
(``decode_procs.ProcessDecoders``), and one message per batch crosses between processes, not one per video.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import numpy as np

from clipvip.embedjob.inputs import PartSource, Sample, iter_samples


@dataclass
class DecodedChunk:
    """One chunk of a part after decoding: uint8 clips [n, T, 3, H, W] (None if nothing decoded), one metadata row
    per clip, the samples that failed, and whether it is the part's last chunk. From a ``DecodeStream`` the clips
    may be a view of a shared buffer, valid until the next chunk is asked for: copy them to keep them longer."""

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


@dataclass
class ChunkResult:
    """One chunk as a decoder returns it: the clips stacked [count, T, 3, H, W] (None when none were decoded, or
    when they were written into a shared buffer instead), the rows, the samples that failed, and decode seconds."""

    clips: np.ndarray | None
    count: int
    rows: list[dict[str, Any]]
    failed: list[dict[str, str]]
    seconds: float

    @classmethod
    def stacked(cls, clips: list[np.ndarray], rows: list, failed: list, seconds: float) -> ChunkResult:
        """The clips stacked into one array (returned by value, not in a shared buffer)."""
        return cls(np.stack(clips) if clips else None, len(clips), rows, failed, seconds)


def decode_chunk(samples: list[Sample], settings: dict[str, Any], timeout: float) -> tuple[list, list, list, float]:
    """Decode samples in order: (clips, rows, failed, seconds). A sample that cannot be decoded is named in
    ``failed`` with its reason and skipped; it never fails the chunk."""
    t0 = time.perf_counter()
    clips: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for sample in samples:
        try:
            c, r = decode_sample(sample, settings, timeout)
        except Exception as e:  # noqa: BLE001 - a bad sample is skipped and named, never fatal
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            failed.append({"file": sample.path, "reason": str(reason)})
            continue
        clips += c
        rows += r
    return clips, rows, failed, time.perf_counter() - t0


def _decode_stacked(samples: list[Sample], settings: dict[str, Any], timeout: float) -> ChunkResult:
    return ChunkResult.stacked(*decode_chunk(samples, settings, timeout))


def pin(cpus: tuple[int, ...] | None) -> None:
    """Pin the calling thread (Linux ``sched_setaffinity(0)`` is per thread; in a worker process, the process)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


class Decoders(Protocol):
    """Where chunks are decoded. ``submit`` returns a ticket, or None when no buffer is free and ``block`` is False;
    ``take`` waits for its ChunkResult, whose clips may be BORROWED (a view of a shared buffer) until ``release``."""

    workers: int

    def submit(self, samples: list[Sample], settings: dict[str, Any], timeout: float, block: bool) -> Any: ...

    def take(self, ticket: Any) -> ChunkResult: ...

    def release(self, ticket: Any) -> None: ...

    def close(self) -> None: ...


class ThreadDecoders:
    """``workers`` decode threads of this process, each pinned to ``cpus`` when given. Clips are owned arrays. Used
    where nothing else in the process needs the interpreter: a Ray decode task, a decode-only run; and by the local
    engine when shared memory is short (see ``decode_procs``)."""

    def __init__(self, workers: int, cpus: tuple[int, ...] | None = None) -> None:
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, initializer=pin, initargs=(cpus,))

    def submit(self, samples: list[Sample], settings: dict[str, Any], timeout: float, block: bool) -> Future:
        return self._pool.submit(_decode_stacked, samples, settings, timeout)

    def take(self, ticket: Future) -> ChunkResult:
        return ticket.result()

    def release(self, ticket: Future) -> None:
        ticket.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _chunked(parts: Iterable[tuple[int, PartSource]], size: int) -> Iterator[tuple[int, int, list[Sample] | Exception]]:
    """(part, chunk index, samples) in order; a part whose input cannot be listed (an unreadable shard) ends with
    (part, -1, the error), and the next parts still come: the error is that part's, not the one running now."""
    for p, src in parts:
        try:
            it = iter(iter_samples(src))
            for index, samples in enumerate(iter(lambda it=it: list(islice(it, size)), [])):
                yield p, index, samples
        except Exception as e:  # noqa: BLE001 - raised by that part's chunks(), so only that part fails
            yield p, -1, e


class DecodeStream:
    """Decoded chunks of ``parts`` (in that order), ``batch_size`` consecutive samples each, decoding up to
    ``workers + 1`` chunks ahead of the consumer, across part boundaries. ``chunks(part)`` must be called in order;
    each part yields at least one chunk, its last marked. A chunk's clips may be borrowed from the decoders: they
    stay valid until the consumer asks for the next chunk. A part whose consumer stopped early (an encoder error)
    has its leftover decodes dropped when the next part starts, and its chunks not yet queued are never decoded."""

    def __init__(
        self,
        parts: list[tuple[int, PartSource]],
        settings: dict[str, Any],
        batch_size: int,
        timeout: float,
        decoders: Decoders,
    ) -> None:
        self.order = [p for p, _ in parts]
        self.settings, self.timeout, self.decoders = settings, timeout, decoders
        self._items = _chunked(parts, batch_size)
        self._peeked: tuple[int, int, list[Sample] | Exception] | None = None
        self._ahead: deque[tuple[int, int, Any]] = deque()
        self._borrowed: Any = None
        self._started: set[int] = set()
        self._current: int | None = None
        self._next = 0
        # a chunk per worker decoding, and one more ready, while the consumer encodes its chunk (measured with
        # per-sample decodes: with 4 of an 8-clip chunk ahead, the encoder waited)
        self.depth = self.decoders.workers + 1

    def is_next(self, part: int) -> bool:
        return self._next < len(self.order) and self.order[self._next] == part

    def _peek(self) -> tuple[int, int, list[Sample] | Exception] | None:
        if self._peeked is None:
            self._peeked = next(self._items, None)
        return self._peeked

    def _fill(self) -> None:
        while len(self._ahead) < self.depth:
            item = self._peek()
            if item is None:
                return
            p, index, samples = item
            if p not in self._started or p == self._current:  # else: the rest of a part that stopped early
                if isinstance(samples, Exception):  # the part's listing failed: its consumer raises it
                    ticket: Any = samples
                else:
                    ticket = self.decoders.submit(samples, self.settings, self.timeout, block=not self._ahead)
                    if ticket is None:  # no free buffer yet: the next release makes one
                        return
                self._ahead.append((p, index, ticket))
            self._peeked = None

    def _release(self, ticket: Any) -> None:
        if not isinstance(ticket, Exception):
            self.decoders.release(ticket)

    def prime(self) -> None:
        """Start decoding now (the job calls it before loading its model, so the two overlap)."""
        self._fill()

    def _give_back(self) -> None:
        if self._borrowed is not None:
            self.decoders.release(self._borrowed)
            self._borrowed = None

    def _more_of(self, part: int) -> bool:
        if self._ahead:
            return self._ahead[0][0] == part
        nxt = self._peek()
        return nxt is not None and nxt[0] == part

    def chunks(self, part: int) -> Iterator[DecodedChunk]:
        if not self.is_next(part):
            raise RuntimeError(f"part {part} asked out of order (next: {self.order[self._next :][:1]})")
        self._next += 1
        self._give_back()
        while self._ahead and self._ahead[0][0] in self._started:  # an earlier part's leftovers
            self._release(self._ahead.popleft()[2])
        self._started.add(part)
        self._current = part
        self._fill()
        yielded = False
        while self._more_of(part):
            if not self._ahead:  # every buffer was in use when this chunk came up
                self._fill()
                continue
            _, index, ticket = self._ahead.popleft()
            if isinstance(ticket, Exception):
                raise ticket
            self._borrowed = ticket
            self._fill()
            r = self.decoders.take(ticket)
            last = not self._more_of(part)
            yielded = True
            yield DecodedChunk(part, index, r.clips, r.rows, r.failed, last=last, decode_seconds=r.seconds)
            self._give_back()
        if not yielded:  # a part with no samples
            yield DecodedChunk(part, 0, None, last=True)

    def cancel(self) -> None:
        """Drop what is queued (the job is over, or the plan changed)."""
        self._give_back()
        while self._ahead:
            self._release(self._ahead.popleft()[2])
