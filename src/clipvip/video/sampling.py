"""Which frames a clip is made of, and the types every reader shares.

Sampling is done over the *actual* frames of the stream in presentation order (counted by the decoder backend,
never taken from the header: Matroska/WebM have no count and VFR files lie), so variable frame rate and odd
containers sample the same frames decord would. ``mode="uniform"`` is the official CLIP-ViP rule
``linspace(0, N-1, T).astype(int)``; ``mode="random"`` is the official training jitter (random start within the
first interval, random end within the last). Videos shorter than T frames repeat indices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts",
     ".m2ts", ".ogv", ".gif", ".vob", ".asf", ".divx", ".f4v", ".y4m"}
)  # fmt: skip
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_TIMEOUT = 60.0
SampleMode = Literal["uniform", "random"]
ResizeMode = Literal["squash", "crop"]


class VideoDecodeError(Exception):
    """A file could not be read. ``path`` and ``reason`` are kept so loaders can count and report skips."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass
class VideoFrames:
    """Frames read from one file. ``timestamps``: seconds (from the first frame) of the frames used."""

    frames: torch.Tensor  # uint8 [T, 3, size, size]
    timestamps: list[float]
    duration: float | None
    path: str
    middle: torch.Tensor | None = None  # uint8 [1, 3, size, size] when read with ``with_middle=True``


@dataclass
class VideoInfo:
    """What the index needs to know about a file; ``num_frames`` is counted from packets, not the header."""

    duration: float | None
    fps: float | None
    num_frames: int
    width: int
    height: int
    codec: str = ""
    rotation: int = 0


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 255]) [..., 3, H, W] -> float32 CLIP mean/std normalised. Kept separate from
    reading so that uint8 frames can be cached / shipped between processes at a quarter of the size.

    WHY in place on one fresh copy: ``(x / 255 - mean) / std`` as four out-of-place ops allocated four float32
    tensors per batch and made normalising cost as much as the tiny encoder itself in ``clipvip embed`` (measured:
    11 ms against 3.7 ms for an [8, 10, 3, 128, 128] batch on one core); the same ops in the same order give the same
    bits."""
    if frames.ndim < 3 or frames.shape[-3] != 3:
        raise ValueError(f"normalize expects [..., 3, H, W], got {tuple(frames.shape)}")
    x = frames.to(torch.float32, copy=True)  # a copy even for float32 input: the ops below are in place
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


def sample_indices(
    n: int, num_frames: int, mode: SampleMode = "uniform", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Frame indices into a video of ``n`` frames, the official CLIP-ViP rule (see the module docstring)."""
    if n <= 0:
        raise ValueError(f"cannot sample from a video with {n} frames")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if mode == "uniform":
        return np.linspace(0, n - 1, num_frames).astype(int)
    if mode != "random":
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    rng = rng if rng is not None else np.random.default_rng()
    if num_frames == 1:
        return np.array([int(rng.integers(0, n))])
    interval = int(n / (num_frames - 1))
    start = int(rng.integers(0, interval + 1))
    end = int(rng.integers(max(n - 1 - interval, 0), n))
    start = min(start, end)
    return np.linspace(start, end, num_frames).astype(int)
