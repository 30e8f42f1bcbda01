"""Video files -> frames: ``read_frames`` / ``read_middle_frame`` / ``probe``, ``normalize``, ``write_video``.

One concept per module:

* ``sampling``: which frames (the official CLIP-ViP rule over the frames actually in the stream), the shared
  types (``VideoFrames``, ``VideoInfo``, ``VideoDecodeError``) and constants, ``normalize``.
* ``read``: the public readers; argument checks, the middle-frame rule, images vs videos.
* ``backend``: **the decoder seam**, a small protocol (``VideoDecoder``: ``decode(path, data, FrameRequest) ->
  DecodedFrames`` and ``probe(path, timeout) -> VideoInfo``) plus the ``Deadline`` every backend honours.
* ``pyav_backend``: the default backend (PyAV/FFmpeg), built from ``pyav_stream`` (open, stream choice, frame
  conversion, fallback exceptions), ``keyframes`` (the demux-only keyframe index), ``decode`` (by pts, by
  count) and ``gop_parallel`` (runs of GOPs decoded concurrently).
* ``images``: image files read as 1-frame videos.
* ``write``: writing small videos (tests, the synthetic demo world).

A second backend (torchcodec, a GPU decoder) is one new module with a class that has ``decode`` and ``probe``
as in ``VideoDecoder``, passed as ``read_frames(..., decoder=MyDecoder())``; nothing else changes. It must
return exactly the frames ``request.pick`` chooses (in presentation order, counted by decoding or demuxing,
not from the header), scaled bicubic to ``request.size`` with rotation applied, and raise
``VideoDecodeError`` for every failure, including a read slower than ``request.timeout``.
"""

from clipvip.video.backend import DecodedFrames, FrameRequest, VideoDecoder
from clipvip.video.pyav_backend import PyAVDecoder
from clipvip.video.read import probe, read_frames, read_middle_frame
from clipvip.video.sampling import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    VideoFrames,
    VideoInfo,
    normalize,
    sample_indices,
)
from clipvip.video.write import write_video

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DecodedFrames",
    "FrameRequest",
    "PyAVDecoder",
    "VideoDecodeError",
    "VideoDecoder",
    "VideoFrames",
    "VideoInfo",
    "normalize",
    "probe",
    "read_frames",
    "read_middle_frame",
    "sample_indices",
    "write_video",
]
