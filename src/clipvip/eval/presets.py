"""Benchmark presets for ``clipvip eval``: which annotation format and files, how many frames, how long a text.

Frames follow the paper's fine-tuning setup (Sec. 5.1: 12 frames, 32 for ActivityNet Captions whose videos average
180 s); texts are cut at 70 tokens as in the paper, except the paragraph benchmarks (DiDeMo, ActivityNet), which use
the text tower's full 77-token context because a video's sentences are joined into one query.
``fmt`` is the ``clipvip.data.load_annotations`` format; ``annotation`` / ``split_list`` are the official file names,
looked up under ``--data-root`` unless given explicitly; ``video_template`` (default: the official layout in
``clipvip.data.annotations.DEFAULT_TEMPLATES``) resolves a video id to a file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalPreset:
    name: str
    description: str
    fmt: str
    annotation: str
    num_frames: int
    context_length: int
    paragraph: bool = False
    split_list: str | None = None
    video_template: str | None = None  # None: the data package's official default for ``fmt``


PRESETS: dict[str, EvalPreset] = {
    p.name: p
    for p in (
        EvalPreset(
            "msrvtt-1ka",
            "MSR-VTT 1k-A test split: 1,000 videos, one caption each",
            fmt="msrvtt",
            annotation="MSRVTT_JSFUSION_test.csv",
            num_frames=12,
            context_length=70,
        ),
        EvalPreset(
            "didemo",
            "DiDeMo test: paragraph-to-video (a video's descriptions joined into one query)",
            fmt="didemo",
            annotation="test_data.json",
            num_frames=12,
            context_length=77,
            paragraph=True,
        ),
        EvalPreset(
            "activitynet",
            "ActivityNet Captions val1: paragraph-to-video, 4.9k videos, 32 frames",
            fmt="activitynet",
            annotation="val_1.json",
            num_frames=32,
            context_length=77,
            paragraph=True,
        ),
        EvalPreset(
            "lsmdc",
            "LSMDC test: 1,000 movie clips, one caption each",
            fmt="lsmdc",
            annotation="LSMDC16_challenge_1000_publictect.csv",
            num_frames=12,
            context_length=70,
        ),
        EvalPreset(
            "msvd",
            "MSVD test: 670 videos, ~40 captions each (video->text counts the best caption)",
            fmt="msvd",
            annotation="captions_msvd.json",
            split_list="test_list.txt",
            num_frames=12,
            context_length=70,
        ),
    )
}


def get_preset(name: str) -> EvalPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
