"""Video files -> frames. (Reader: see issue #3.)"""

from clipvip.video.write import write_video

__all__ = ["write_video"]
