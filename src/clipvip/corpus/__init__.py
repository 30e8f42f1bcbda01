"""Raw videos -> a post-pretraining corpus: subtitles (sidecar, embedded or ASR), subtitle-aligned clips (the
HD-VILA-100M rule), cutting with PyAV, WebDataset shards that ``clipvip caption`` and ``clipvip train`` read."""

from clipvip.corpus.clips import Clip, ClipRule, ClipStats, make_clips, sentences
from clipvip.corpus.cut import CUT_MODES, CutClip, CutError, CutOptions, VideoCutter
from clipvip.corpus.hdvila import Span, SpanVideo, find_video, read_hdvila_metadata
from clipvip.corpus.job import CorpusConfig, CorpusJob, VideoTask, merge_manifests, summarize, video_tasks
from clipvip.corpus.subtitles import (
    Cue,
    SubtitleError,
    find_sidecars,
    parse_subtitles,
    read_embedded,
    read_subtitle_file,
)

__all__ = [
    "CUT_MODES",
    "Clip",
    "ClipRule",
    "ClipStats",
    "CorpusConfig",
    "CorpusJob",
    "Cue",
    "CutClip",
    "CutError",
    "CutOptions",
    "Span",
    "SpanVideo",
    "SubtitleError",
    "VideoCutter",
    "VideoTask",
    "find_sidecars",
    "find_video",
    "make_clips",
    "merge_manifests",
    "parse_subtitles",
    "read_embedded",
    "read_hdvila_metadata",
    "read_subtitle_file",
    "sentences",
    "summarize",
    "video_tasks",
]
