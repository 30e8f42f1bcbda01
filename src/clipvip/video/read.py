"""The public readers: ``read_frames`` / ``read_middle_frame`` / ``probe``.

They own what does not depend on how a file is decoded: argument checks, the sampling rule
(:mod:`clipvip.video.sampling`), the middle-frame rule, images (:mod:`clipvip.video.images`) and the result type.
Video decoding goes through the decoder seam (:class:`~clipvip.video.backend.VideoDecoder`); the default is the
PyAV backend (:class:`~clipvip.video.pyav_backend.PyAVDecoder`). What was importable from here before the split
still is: the ``X as X`` imports re-export the names of :mod:`clipvip.video.sampling`
(``from clipvip.video.read import VIDEO_EXTENSIONS, normalize, ...``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from clipvip.video.backend import FrameRequest, VideoDecoder
from clipvip.video.images import is_image, probe_image, read_image
from clipvip.video.pyav_backend import PyAVDecoder
from clipvip.video.sampling import CLIP_MEAN as CLIP_MEAN
from clipvip.video.sampling import CLIP_STD as CLIP_STD
from clipvip.video.sampling import DEFAULT_TIMEOUT, ResizeMode, SampleMode, VideoFrames, VideoInfo, sample_indices
from clipvip.video.sampling import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from clipvip.video.sampling import VIDEO_EXTENSIONS as VIDEO_EXTENSIONS
from clipvip.video.sampling import VideoDecodeError as VideoDecodeError
from clipvip.video.sampling import normalize as normalize


def read_frames(
    path: str | os.PathLike | bytes,
    num_frames: int = 12,
    size: int = 224,
    mode: SampleMode = "uniform",
    resize: ResizeMode = "squash",
    start: float | None = None,
    end: float | None = None,
    rng: np.random.Generator | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
    with_middle: bool = False,
    name: str | None = None,
    *,
    decoder: VideoDecoder | None = None,
) -> VideoFrames:
    """Read ``num_frames`` frames as uint8 [T, 3, size, size] (T == 1 for images, see :mod:`clipvip.video.images`).

    ``resize="squash"`` is the official bicubic resize to size x size; ``"crop"`` scales the shortest side to
    ``size`` and center-crops. ``start``/``end`` (seconds) restrict sampling to a window of a long video.
    ``threads``: decoding threads (None = automatic: FFmpeg's decoder threads, and GOPs decoded in parallel when
    the frames span several; 1 = one single-threaded decoder and no extra thread, good inside many loader
    workers; k = at most k parallel GOP runs). Raises :class:`VideoDecodeError` for anything unreadable,
    including a decode slower than ``timeout`` seconds.

    ``with_middle=True`` also returns the :func:`read_middle_frame` frame as ``.middle`` from the same decode.
    ``path`` may be the file's bytes (e.g. a WebDataset member); ``name`` then labels it (errors, image suffix).
    ``decoder``: the video backend (default: PyAV).
    """
    data, path = _source(path, name)
    if mode not in ("uniform", "random"):
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    if resize not in ("squash", "crop"):
        raise ValueError(f"resize must be 'squash' or 'crop', got {resize!r}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"{path}: end ({end}) is before start ({start})")
    if is_image(path):
        return read_image(path, size, resize, data)

    def sample(n: int) -> np.ndarray:
        return sample_indices(n, num_frames, mode, rng)

    pick = _same_draw_per_count(sample, with_middle)
    request = FrameRequest(pick, size=size, resize=resize, start=start, end=end, timeout=timeout, threads=threads)
    out = (decoder or PyAVDecoder()).decode(path, data, request)
    if with_middle:
        return VideoFrames(out.frames[:-1], out.timestamps[:-1], out.duration, path, middle=out.frames[-1:].clone())
    return VideoFrames(frames=out.frames, timestamps=out.timestamps, duration=out.duration, path=path)


def read_middle_frame(
    path: str | os.PathLike | bytes,
    size: int = 224,
    resize: ResizeMode = "squash",
    timeout: float = DEFAULT_TIMEOUT,
    name: str | None = None,
    *,
    decoder: VideoDecoder | None = None,
) -> torch.Tensor:
    """THE middle-frame rule: frame index ``N // 2`` of the N frames in presentation order (the image itself
    for an image file) -> uint8 [1, 3, size, size]. Shared by the post-pretraining image input and the
    captioner so the caption always describes the frame the model sees."""
    data, path = _source(path, name)
    if is_image(path):
        return read_image(path, size, resize, data).frames

    def middle(n: int) -> np.ndarray:
        return np.array([n // 2])

    request = FrameRequest(middle, size=size, resize=resize, timeout=timeout)
    return (decoder or PyAVDecoder()).decode(path, data, request).frames


def probe(
    path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT, *, decoder: VideoDecoder | None = None
) -> VideoInfo:
    """Duration / fps / exact frame count / size of a file by demuxing (decodes one frame for rotation)."""
    path = os.fspath(path)
    if is_image(path):
        return probe_image(path)
    return (decoder or PyAVDecoder()).probe(path, timeout)


def _same_draw_per_count(sample: Callable[[int], np.ndarray], with_middle: bool) -> Callable[[int], np.ndarray]:
    """``sample`` made to give the same draw for the same frame count (a backend's fallback may ask again), with
    the middle frame ``n // 2`` appended when ``with_middle`` (the middle-frame rule, decoded in the same pass)."""
    memo: dict[int, np.ndarray] = {}

    def pick(n: int) -> np.ndarray:
        if n not in memo:
            idx = np.asarray(sample(n))
            memo[n] = np.concatenate([idx, [n // 2]]) if with_middle else idx
        return memo[n]

    return pick


def _source(path: str | os.PathLike | bytes, name: str | None) -> tuple[bytes | None, str]:
    if isinstance(path, (bytes, bytearray, memoryview)):
        return bytes(path), name or "<bytes>"
    return None, os.fspath(path)
