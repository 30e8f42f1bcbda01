"""Auxiliary captions (paper Sec. 4.1): caption the middle frame of every clip with an image captioner.

The paper runs OFA-Caption on the middle frame of each HD-VILA-100M clip and keeps at most 16 words, so the
pretraining text gets closer to downstream (descriptive) captions. Here any Hugging Face transformers image-to-text
model loadable through ``AutoModelForImageTextToText`` does the captioning.

The job is built for 100M clips on many GPUs: the input is streamed (jsonl / parquet manifests or
video2dataset-style WebDataset tar shards), frames are decoded in DataLoader workers, each torchrun rank appends to
its own part file, a restarted run skips what is already captioned, bad videos are skipped and listed, and when
every rank is done the parts are merged (deduplicated by clip id) into ``OUT`` atomically. Output lines are
``{"clip_id", "caption", "captioner"}``; the OCL data set reads them by clip id as C.

- ``inputs``: what to caption (manifests, shards) and the middle-frame stream that feeds the captioner;
- ``captioner``: the model, its loading checks and generation;
- ``job``: per-rank parts, resume, merge, ``run_captioning``.
"""

from clipvip.captioning.captioner import MAX_WORDS, Captioner, CaptionerConfig, check_model_source, truncate_words
from clipvip.captioning.inputs import (
    MANIFEST_SUFFIXES,
    CaptionInput,
    FrameItem,
    FrameStream,
    ManifestOptions,
    iter_manifest,
    owner_rank,
    stable_hash,
)
from clipvip.captioning.job import (
    MAX_REPORTED_FAILURES,
    CaptionJobConfig,
    CaptionReport,
    MergeReport,
    failed_path,
    merge_parts,
    parts_dir,
    repair_jsonl,
    run_captioning,
)
from clipvip.data.shards import iter_shard_samples

__all__ = [
    "MANIFEST_SUFFIXES",
    "MAX_REPORTED_FAILURES",
    "MAX_WORDS",
    "CaptionInput",
    "CaptionJobConfig",
    "CaptionReport",
    "Captioner",
    "CaptionerConfig",
    "FrameItem",
    "FrameStream",
    "ManifestOptions",
    "MergeReport",
    "check_model_source",
    "failed_path",
    "iter_manifest",
    "iter_shard_samples",
    "merge_parts",
    "owner_rank",
    "parts_dir",
    "repair_jsonl",
    "run_captioning",
    "stable_hash",
    "truncate_words",
]
