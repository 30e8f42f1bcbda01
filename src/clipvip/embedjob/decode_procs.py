"""Decoding in worker processes that write each chunk's frames straight into shared memory.

WHY processes: PyAV takes the interpreter lock back after every FFmpeg call, and the encoder's Python dispatch holds
it between kernels, so a decode THREAD and the encoder slow each other down even on separate cores. Measured
(``bench_embed_probe.py``: 1,000 10-frame 128 px clips, the encoder pinned to core 1, decoding on core 0): the
encoder took 1.09-1.14x its solo time beside a decode thread and 0.98x beside a decode process.

WHY shared buffers: a pickled 8-clip batch of 128 px frames is 4 MB through a pipe, unpickled under the encoder's
interpreter lock (an earlier try that did so ran at 0.65x of the encoder's solo speed). Here a worker writes the
frames into one of a ring of chunk buffers that the consumer reads in place; one small message (rows, failures)
crosses per chunk. A chunk that does not fit (a long video cut into many windows) comes back pickled instead.

WHY forkserver: a fork of a process with threads (torch's pools, a gloo rank) can hang on a lock held at fork time,
and a spawned worker imports torch anew (~2.5 s each). The fork server imports this module once; workers fork
from it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from clipvip.embedjob.decode import ChunkResult, decode_chunk, pin
from clipvip.embedjob.inputs import Sample

SHM_DIR = "/dev/shm"
# This worker process's view of the buffers (set once by _worker_init; a worker serves one ProcessDecoders).
_worker: dict[str, Any] = {}


def _exit_with(parent: Any) -> None:
    parent.join()  # returns when the job's process is gone
    os._exit(1)


def _worker_init(shm_name: str, shape: tuple[int, ...], cpus: tuple[int, ...] | None) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to handle: it stops the pool, once
    # A worker outlives a job killed without cleanup (SIGKILL, OOM): it waits on its queue for ever, and the fork
    # server stays up for it. So each worker watches the job's process and exits with it.
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    torch.set_num_threads(1)  # a decoder uses one core; torch's pool would spread its few ops over all
    pin(cpus)
    shm = SharedMemory(shm_name)
    _worker["shm"] = shm
    _worker["buffers"] = np.ndarray(shape, np.uint8, buffer=shm.buf)


def _decode_into(samples: list[Sample], settings: dict[str, Any], timeout: float, slot: int | None) -> ChunkResult:
    """In a worker: decode the chunk and write its clips into buffer ``slot`` (None or too many: return them)."""
    clips, rows, failed, seconds = decode_chunk(samples, settings, timeout)
    if slot is not None and clips:
        buf = _worker["buffers"][slot]
        if len(clips) <= len(buf) and all(c.shape == buf.shape[1:] for c in clips):
            for i, c in enumerate(clips):
                buf[i] = c
            return ChunkResult(None, len(clips), rows, failed, seconds)
    return ChunkResult.stacked(clips, rows, failed, seconds)


class _Borrowed:
    """A view of the shared buffers that keeps them mapped while it lives: numpy does not hold the buffer it was
    made from, so a view made straight from ``SharedMemory.buf`` would point at unmapped memory after ``close``."""

    def __init__(self, view: np.ndarray, shm: SharedMemory) -> None:
        self.__array_interface__ = view.__array_interface__
        self._view, self._shm = view, shm


def shared_memory_room() -> int:
    """Bytes free for shared memory (a container's /dev/shm is often 64 MB); 0 where there is none."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


@dataclass
class _Ticket:
    samples: list[Sample]
    settings: dict[str, Any]
    timeout: float
    slot: int
    future: Future
    pool: ProcessPoolExecutor
    retried: bool = False
    released: bool = field(default=False, repr=False)


class ProcessDecoders:
    """``workers`` decode processes (pinned to ``cpus`` when given) and a ring of ``slots`` shared chunk buffers of
    ``chunk_shape`` = (batch_size, T, 3, H, W) uint8. ``take`` returns clips that are a view of the chunk's buffer,
    borrowed until ``release``.

    A worker that dies (FFmpeg crashing on a file) breaks the pool: it is restarted and each chunk in flight is
    decoded again once; a chunk that kills a worker twice is decoded one sample per task, and the samples that
    still kill their worker are reported as failed, like any undecodable file."""

    def __init__(
        self, workers: int, chunk_shape: tuple[int, ...], slots: int, cpus: tuple[int, ...] | None = None
    ) -> None:
        self.workers = max(1, workers)
        if slots < self.min_slots(self.workers):
            raise ValueError(f"{slots} buffers for {self.workers} decoders: a DecodeStream needs at least "
                             f"{self.min_slots(self.workers)} (fewer can wait for ever)")  # fmt: skip
        self.cpus = cpus
        self.shape = (slots, *chunk_shape)
        self._shm = SharedMemory(create=True, size=max(1, int(np.prod(self.shape))))
        self._buffers = np.ndarray(self.shape, np.uint8, buffer=self._shm.buf)
        self._free = list(range(slots))
        self._cv = threading.Condition()
        self._ctx = mp.get_context("forkserver")
        # What a decode imports, loaded once in the server. This sets multiprocessing's one fork server for the
        # whole process, and does nothing if it already runs (then each worker imports torch itself, ~2.5 s).
        self._ctx.set_forkserver_preload(["clipvip.embedjob.decode_procs", "clipvip.video", "clipvip.index.build"])
        self._pool = self._new_pool()

    @staticmethod
    def min_slots(workers: int) -> int:
        """Buffers a DecodeStream may hold at once: ``workers + 1`` chunks ahead, one borrowed by the consumer, and
        up to ``workers + 1`` of a part that stopped early whose workers are still writing."""
        return 2 * max(1, workers) + 3

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=self._ctx,
            initializer=_worker_init,
            initargs=(self._shm.name, self.shape, self.cpus),
        )

    def _run(self, t: _Ticket, slot: int | None, samples: list[Sample]) -> Future:
        try:
            return self._pool.submit(_decode_into, samples, t.settings, t.timeout, slot)
        except BrokenProcessPool:  # a worker died since the last submit
            self._restart(self._pool)
            return self._pool.submit(_decode_into, samples, t.settings, t.timeout, slot)

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        if broken is self._pool:
            # wait: the broken pool's workers are gone before a retry writes into the buffer they may have held
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._new_pool()

    def submit(self, samples: list[Sample], settings: dict[str, Any], timeout: float, block: bool) -> _Ticket | None:
        with self._cv:
            if not self._free and not block:
                return None
            while not self._free:
                self._cv.wait()
            slot = self._free.pop()
        t = _Ticket(samples, settings, timeout, slot, Future(), self._pool)
        try:
            t.future = self._run(t, slot, samples)
        except BaseException:
            self._free_slot(slot)
            raise
        t.pool = self._pool
        return t

    def take(self, t: _Ticket) -> ChunkResult:
        try:
            r = t.future.result()
        except BrokenProcessPool:
            self._restart(t.pool)
            if t.retried:
                return self._one_by_one(t)
            t.retried = True
            t.future, t.pool = self._run(t, t.slot, t.samples), self._pool
            return self.take(t)
        if r.clips is None and r.count:
            r.clips = np.asarray(_Borrowed(self._buffers[t.slot][: r.count], self._shm))
        return r

    def _one_by_one(self, t: _Ticket) -> ChunkResult:
        """The chunk killed a worker twice: decode each sample alone, returned pickled; a sample whose worker dies
        is named as failed."""
        clips: list[np.ndarray] = []
        rows: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        seconds = 0.0
        for sample in t.samples:
            try:
                r = self._run(t, None, [sample]).result()
            except BrokenProcessPool:
                self._restart(self._pool)
                failed.append({"file": sample.path, "reason": "the decoder crashed on this file (worker died)"})
                continue
            if r.clips is not None:
                clips += list(r.clips)
            rows += r.rows
            failed += r.failed
            seconds += r.seconds
        return ChunkResult.stacked(clips, rows, failed, seconds)

    def release(self, t: _Ticket) -> None:
        """The consumer is done with the chunk: its buffer is free once no worker can still write into it."""
        if t.released:
            return
        t.released = True
        if t.future.cancel() or t.future.done():
            self._free_slot(t.slot)
        else:  # an abandoned chunk still decoding: free the buffer when the worker is done with it
            t.future.add_done_callback(lambda _f, slot=t.slot: self._free_slot(slot))

    def _free_slot(self, slot: int) -> None:
        with self._cv:
            self._free.append(slot)
            self._cv.notify()

    def close(self) -> None:
        """Stop the workers and remove the buffers' name. The mapping goes when the last view of it does (a caller
        may still hold a borrowed chunk), not here."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffers = None  # type: ignore[assignment]
        self._shm.unlink()
