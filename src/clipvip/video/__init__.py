"""Video files -> frames: ``read_frames`` / ``read_middle_frame`` / ``probe`` (PyAV), ``normalize``.

See ``clipvip.video.read`` for the sampling rules and why they are what they are."""

from clipvip.video.read import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    VideoFrames,
    VideoInfo,
    normalize,
    probe,
    read_frames,
    read_middle_frame,
    sample_indices,
)
from clipvip.video.write import write_video

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoDecodeError",
    "VideoFrames",
    "VideoInfo",
    "normalize",
    "probe",
    "read_frames",
    "read_middle_frame",
    "sample_indices",
    "write_video",
]
