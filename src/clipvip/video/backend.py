"""The decoder seam: the one interface a video backend implements.

``read_frames`` / ``read_middle_frame`` / ``probe`` (``clipvip.video.read``) own everything that does not depend
on how a file is decoded: argument checks, the sampling rule, the middle-frame rule, images, the result type.
A backend only answers "these frames of this file, scaled" (:meth:`VideoDecoder.decode`) and "what is in this
file" (:meth:`VideoDecoder.probe`). The PyAV backend (``clipvip.video.pyav_backend``) is the default; another
one (torchcodec, a GPU decoder) is one new file with a class that has these two methods, passed as
``read_frames(..., decoder=...)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from clipvip.video.sampling import DEFAULT_TIMEOUT, ResizeMode, VideoDecodeError, VideoInfo


@dataclass(frozen=True)
class FrameRequest:
    """Which frames to decode and how to scale them.

    ``pick(n)`` maps the number of frames ``n`` in the window (presentation order, counted by the backend) to
    the indices wanted, repeats allowed; it returns the same indices when asked again with the same ``n`` (a
    backend may ask again after a fallback). ``start``/``end`` (seconds from the first frame) restrict the
    window. ``threads``: None = the backend's choice, 1 = no extra threads (inside DataLoader workers).
    """

    pick: Callable[[int], np.ndarray]
    size: int = 224
    resize: ResizeMode = "squash"
    start: float | None = None
    end: float | None = None
    timeout: float = DEFAULT_TIMEOUT
    threads: int | None = None


@dataclass
class DecodedFrames:
    """A backend's answer: one frame per picked index, in pick order."""

    frames: torch.Tensor  # uint8 [T, 3, size, size], RGB, rotation metadata applied
    timestamps: list[float]  # seconds from the first frame of the stream
    duration: float | None


@runtime_checkable
class VideoDecoder(Protocol):
    """A video backend. Every failure (unreadable file, no frames, slower than ``timeout``) is a
    :class:`~clipvip.video.sampling.VideoDecodeError` naming the file; the frames returned are exactly the
    picked ones, never silently others."""

    def decode(self, path: str, data: bytes | None, request: FrameRequest) -> DecodedFrames:
        """Decode the frames ``request.pick`` chooses from the file at ``path`` (or its bytes ``data``; ``path``
        then only names it), resized to ``request.size`` with ``request.resize`` (bicubic)."""
        ...

    def probe(self, path: str, timeout: float) -> VideoInfo:
        """Duration, fps, the exact frame count, display size and codec of a video file."""
        ...


class Cancelled(Exception):
    """A parallel decode worker stops because another one failed (the failure is what gets reported)."""


class Deadline:
    """A wall-clock limit for one read, checked between packets, so a pathological file cannot stall a loader."""

    def __init__(self, path: str, timeout: float, cancel: threading.Event | None = None) -> None:
        self.path, self.timeout = path, timeout
        self.end = time.monotonic() + timeout
        self.cancel = cancel

    def sharing(self, cancel: threading.Event) -> Deadline:
        """The same deadline, also stopping when ``cancel`` is set (a sibling worker failed)."""
        d = Deadline(self.path, self.timeout, cancel)
        d.end = self.end
        return d

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        if time.monotonic() > self.end:
            raise VideoDecodeError(self.path, f"timed out after {self.timeout:g} s")
