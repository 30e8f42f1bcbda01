"""``train_data`` / ``eval_data``: the config keys that become a data set, their defaults, and their help text.

The keys are the keyword arguments of ``clipvip.data.RetrievalDataset`` (fine-tuning, evaluation) and
``clipvip.data.PretrainDataset`` (post-pretraining). The schema printed by ``clipvip train --help`` is read from
those signatures, so it cannot drift from what the data sets accept. Frame count, frame size and text length
default to the model's (and the config's ``context_length``), never to a fixed 224 px a model may reject.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

# One line per key; keys without a line are still listed (with their default) by ``schema_text``.
DESCRIPTIONS: dict[str, str] = {
    "samples": "annotation file: a .jsonl of {video, caption} (or official {clip_id, text}) rows, or a benchmark file",
    "source": "manifest (.jsonl/.parquet: clip_id, video?, subtitle, caption?) or WebDataset shards (a{000..009}.tar)",
    "video_root": "folder that relative video paths start from",
    "captions": "a {clip_id, caption} jsonl from `clipvip caption` (auxiliary captions)",
    "split": "train (random caption + frame jitter) or eval/val/test (every caption a query)",
    "num_frames": "frames sampled per video",
    "size": "frame size in pixels",
    "context_length": "text tokens",
    "fmt": "annotation format: jsonl, msrvtt, didemo, activitynet, lsmdc, msvd",
    "template": "video path from row fields, e.g. '{root}/{video_id}.mp4'",
    "annotation_options": "extra reader options, e.g. {split_list: MSVD_test_list.txt} or {captions: MSRVTT_data.json}",
    "resize": "squash (whole frame, aspect changed) or crop (centre crop)",
    "mode": "frame sampling: random (jittered segments) or uniform",
    "caption_field": "manifest / shard json field holding the auxiliary caption",
    "subtitle_field": "manifest / shard json field holding the subtitle",
    "require_caption": "skip clips without a caption (else use the subtitle)",
    "shuffle": "reorder shards every epoch",
    "shuffle_buffer": "samples mixed in a buffer (0: off)",
    "seed": "seed of caption choice and frame jitter",
    "timeout": "seconds allowed to decode one video (a slower one is skipped and named)",
    "threads": "decoder threads per video",
    "check_files": "drop rows whose video file is missing (listed once) instead of failing later",
}
SHOWN_DEFAULTS = {
    "num_frames": "the model's (or the config's num_frames)",
    "size": "the model's image size",
    "context_length": "the config's context_length",
    "fmt": "jsonl for a .jsonl/.json file",
    "template": "the format's own; jsonl: '{root}/{file}', file = the row's video or <clip_id>.mp4",
    "split": "train for train_data, test for eval_data",
}


def _dataset_class(stage: str) -> type:
    from clipvip import data

    return data.PretrainDataset if stage == "pretrain" else data.RetrievalDataset


def _params(cls: type) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]


def schema_text() -> str:
    """Every train_data key of both stages with its default, for ``clipvip train --help`` and the README."""
    lines = []
    for stage, title in (
        ("finetune", "stage: finetune (RetrievalDataset)"),
        ("pretrain", "stage: pretrain (PretrainDataset)"),
    ):
        lines.append(f"train_data / eval_data keys, {title}:")
        for p in _params(_dataset_class(stage)):
            if p.name in SHOWN_DEFAULTS:
                default = SHOWN_DEFAULTS[p.name]
            elif p.default is inspect.Parameter.empty:
                default = "required"
            else:
                default = repr(p.default)
            what = DESCRIPTIONS.get(p.name, "")
            lines.append(f"  {p.name:<19} {what} (default: {default})")
        lines.append("")
    return "\n".join(lines).rstrip()


def data_kwargs(
    stage: str, given: dict[str, Any], model_config: Any, num_frames: int | None, context_length: int
) -> dict[str, Any]:
    """The config's data keys + defaults from the model; an unknown key is one clear error naming the valid ones."""
    cls = _dataset_class(stage)
    known = {p.name for p in _params(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"train_data/eval_data: unknown keys {unknown} for {cls.__name__}; known: {sorted(known)}")
    kw = dict(given)
    if model_config is not None:
        kw.setdefault("num_frames", num_frames or model_config.num_frames)
        kw.setdefault("size", model_config.vision.image_size)
    kw.setdefault("context_length", context_length)
    samples = kw.get("samples")
    if isinstance(samples, str) and Path(samples).suffix.lower() in (".jsonl", ".json") and "fmt" not in kw:
        kw.setdefault("fmt", "jsonl")
    return kw
