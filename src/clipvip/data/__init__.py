"""Annotations and data sets: benchmark annotation parsers, the retrieval / post-pretraining data sets and the
``collate`` that turns undecodable samples into a counted ``batch["skipped"]`` list instead of a crash."""

from clipvip.data.annotations import (
    DEFAULT_TEMPLATES,
    FORMATS,
    AnnotationError,
    ResolvedVideos,
    Sample,
    load_annotations,
    resolve_videos,
    video_path,
)
from clipvip.data.datasets import (
    PretrainDataset,
    RetrievalDataset,
    SkipCounter,
    collate,
    expand_shards,
    load_captions,
    worker_slot,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "FORMATS",
    "AnnotationError",
    "PretrainDataset",
    "ResolvedVideos",
    "RetrievalDataset",
    "Sample",
    "SkipCounter",
    "collate",
    "expand_shards",
    "load_annotations",
    "load_captions",
    "resolve_videos",
    "video_path",
    "worker_slot",
]
