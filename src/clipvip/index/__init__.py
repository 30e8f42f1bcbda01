"""Searching your own videos: an incremental on-disk index (``build_index``), exact / FAISS ANN search
(``VideoIndex``, ``clipvip.index.ann``)."""

from clipvip.index.ann import AnnConfig, AnnIndex, build_ann, choose_kind, exact_topk, recall_at_k
from clipvip.index.build import BuildReport, IndexConfig, build_index, find_videos, windows
from clipvip.index.store import Hit, IndexFormatError, VideoIndex, load_index_model, model_fingerprint, read_meta

__all__ = [
    "AnnConfig",
    "AnnIndex",
    "BuildReport",
    "Hit",
    "IndexConfig",
    "IndexFormatError",
    "VideoIndex",
    "build_ann",
    "build_index",
    "choose_kind",
    "exact_topk",
    "find_videos",
    "load_index_model",
    "model_fingerprint",
    "read_meta",
    "recall_at_k",
    "windows",
]
