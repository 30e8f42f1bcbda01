"""Writing small videos with PyAV (tests, the synthetic demo world, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from clipvip.io import atomic_path


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 8.0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    timestamps: Sequence[float] | None = None,
) -> Path:
    """frames: uint8 [T, H, W, 3] RGB -> a video file (container from the suffix). Atomic: temp file + rename.

    H.264 needs even sizes; defaults favour lossless-ish quality (crf 10) so tests can compare pixels.
    ``rotation``: display-matrix rotation in degrees counter-clockwise (what phones write; readers must undo it).
    ``timestamps``: per-frame presentation times in seconds (millisecond precision) for variable frame rate."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"crf": "10", "preset": "veryfast"} if codec == "libx264" else {}
    opts.update(options or {})
    with atomic_path(path, keep_suffix=True) as tmp:  # FFmpeg picks the container from the suffix
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = pix_fmt
            stream.options = opts
            if rotation:
                stream.set_display_rotation(rotation)
            if timestamps is not None:
                if len(timestamps) != len(frames):
                    raise ValueError(f"{path}: {len(timestamps)} timestamps for {len(frames)} frames")
                stream.codec_context.time_base = Fraction(1, 1000)
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                if timestamps is not None:
                    frame.pts, frame.time_base = round(timestamps[i] * 1000), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
