"""Images (``IMAGE_EXTENSIONS``) read as 1-frame videos.

``frames`` has ``T == 1`` whatever ``num_frames`` is; the caller decides whether to repeat it (``encode_image``
treats a 1-frame input as an image). EXIF orientation is applied and any mode (grayscale, palette, alpha) is
converted to RGB as CLIP's preprocessing does (``convert("RGB")``: alpha is dropped). Images go through the same
FFmpeg scaler as video frames, so an image and a video frame of the same pixels give the same tensor.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import torch

from clipvip.video.pyav_stream import convert_frame
from clipvip.video.sampling import IMAGE_EXTENSIONS, ResizeMode, VideoDecodeError, VideoFrames, VideoInfo


def is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _decode(path: str, data: bytes | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode once: the RGB pixels (EXIF orientation applied) and the stored (width, height)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            stored_size = im.size
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise VideoDecodeError(path, "file does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise VideoDecodeError(path, f"cannot read image: {e}") from e
    return rgb, stored_size


def read_image(path: str, size: int, resize: ResizeMode, data: bytes | None = None) -> VideoFrames:
    """The image as uint8 [1, 3, size, size] (``middle`` is the same frame)."""
    rgb, _ = _decode(path, data)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    arr = torch.from_numpy(convert_frame(frame, size, resize)).permute(2, 0, 1)[None].contiguous()
    return VideoFrames(arr, [0.0], None, path, middle=arr)


def probe_image(path: str) -> VideoInfo:
    """An image as a 1-frame video; decoded (once) to validate it, so probe and read agree on what is readable.
    ``width``/``height`` are the stored size (before EXIF orientation)."""
    _, (w, h) = _decode(path, None)
    return VideoInfo(duration=None, fps=None, num_frames=1, width=w, height=h, codec="image")
