"""Benchmark presets for ``clipvip eval``: which annotation format and files, how many frames, how long a text.

Frames follow the paper's fine-tuning setup (Sec. 5.1: 12 frames, 32 for ActivityNet Captions whose videos average
180 s); texts are cut at 70 tokens as in the paper, except the paragraph benchmarks (DiDeMo, ActivityNet), which use
the text tower's full 77-token context because a video's sentences are joined into one query.
``fmt`` is the ``clipvip.data.load_annotations`` format; ``annotation`` / ``split_list`` are the official file names,
looked up under ``--data-root`` unless given explicitly; ``video_template`` (default: the official layout in
``clipvip.data.annotations.DEFAULT_TEMPLATES``) resolves a video id to a file. ``prepare`` names the
``clipvip prepare`` preset whose output the benchmark was measured on: a ``--video-root`` written by
``clipvip prepare`` (it has a ``prepared.json``) is read with ``prepared_template`` (same layout, suffix .mp4).

``ZERO_SHOT_PRESETS`` are the paper's Appendix A tasks for ``clipvip zeroshot``: HMDB51 classification with the
prompt "a person [label]", SSv2 as multiple choice over all 174 label texts, MSR-VTT MC and LSMDC MC.
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
    title: str = ""  # short name for reports (no counts: the report counts what was actually evaluated)
    prepare: str | None = None  # the ``clipvip prepare`` preset of the videos the paper's numbers come from


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
            title="MSR-VTT 1k-A test",
            prepare="msrvtt",
        ),
        EvalPreset(
            "didemo",
            "DiDeMo test: paragraph-to-video (a video's descriptions joined into one query)",
            fmt="didemo",
            annotation="test_data.json",
            num_frames=12,
            context_length=77,
            paragraph=True,
            title="DiDeMo test",
            prepare="didemo",
        ),
        EvalPreset(
            "activitynet",
            "ActivityNet Captions val1: paragraph-to-video, 4.9k videos, 32 frames",
            fmt="activitynet",
            annotation="val_1.json",
            num_frames=32,
            context_length=77,
            paragraph=True,
            title="ActivityNet Captions val1",
            prepare="activitynet",
        ),
        EvalPreset(
            "lsmdc",
            "LSMDC test: 1,000 movie clips, one caption each",
            fmt="lsmdc",
            annotation="LSMDC16_challenge_1000_publictect.csv",
            num_frames=12,
            context_length=70,
            title="LSMDC test",
            prepare="lsmdc",
        ),
        EvalPreset(
            "msvd",
            "MSVD test: 670 videos, ~40 captions each (video->text counts the best caption)",
            fmt="msvd",
            annotation="captions_msvd.json",
            split_list="test_list.txt",
            num_frames=12,
            context_length=70,
            title="MSVD test",
            prepare="msvd",
        ),
    )
}


def get_preset(name: str) -> EvalPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def prepared_template(fmt_or_template: str) -> str:
    """Path template of a folder written by ``clipvip prepare``: the official one (an annotation format's
    default, or a template) with the suffix .mp4 (``{root}/{video_id}.avi`` -> ``{root}/{video_id}.mp4``)."""
    from clipvip.data.annotations import DEFAULT_TEMPLATES

    tpl = DEFAULT_TEMPLATES.get(fmt_or_template, fmt_or_template)
    return tpl if tpl.endswith(".*") else tpl.rsplit(".", 1)[0] + ".mp4"


@dataclass(frozen=True)
class ZeroShotPreset:
    """A zero-shot task of the paper's Appendix A. ``task``: "classify" (one label list for all videos) or "mc"
    (per-video candidates from ``reader``, a ``clipvip.data.multiple_choice.MC_READERS`` key). ``templates``:
    prompts for class names (``convert``: turn "brush_hair" into "brush hair" first). ``video_template``: the
    official file layout (``{root}``, ``{video_id}``, ``{movie}``)."""

    name: str
    task: str
    description: str
    video_template: str
    num_frames: int = 12
    context_length: int = 70
    reader: str | None = None
    templates: tuple[str, ...] = ("{}",)
    convert: bool = False
    prepare: str | None = None
    note: str = ""


SSV2_NOTE = (
    "SSv2 as the paper runs it (Appendix A: 'choose the ground truth annotation among all categories'): every video "
    "chooses among ALL 174 label texts of the label file, used as sentences without a prompt. That is a 174-way "
    "multiple choice, the same for every video, unlike plain zero-shot classification, which prompts short class "
    "names ('a person [label]') and may ensemble templates. The paper does not say what fills the 'something' slots; "
    "by default the label file's own text is used as is ('Putting something on something'); with "
    "--fill-placeholders each video's own annotated objects fill the slots of every candidate, so candidates differ "
    "per video (the annotation's 'label' sentence is then the correct one)."
)

ZERO_SHOT_PRESETS: dict[str, ZeroShotPreset] = {
    p.name: p
    for p in (
        ZeroShotPreset(
            "hmdb51",
            "classify",
            "HMDB51 zero-shot classification, prompt 'a person [label]' (Appendix A)",
            "{root}/{video_id}.avi",
            templates=("a person {}.",),
            convert=True,
        ),
        ZeroShotPreset(
            "ssv2-mc",
            "classify",
            "Something-Something v2 as multiple choice over all 174 label texts (Appendix A)",
            "{root}/{video_id}.webm",
            note=SSV2_NOTE,
        ),
        ZeroShotPreset(
            "msrvtt-mc",
            "mc",
            "MSR-VTT multiple choice (JSFusion MSR_MC_test.csv, 5 candidates)",
            "{root}/{video_id}.mp4",
            reader="msrvtt-mc",
            prepare="msrvtt",
        ),
        ZeroShotPreset(
            "lsmdc-mc",
            "mc",
            "LSMDC16 movie multiple choice (LSMDC16_multiple_choice_test_randomized.csv, 5 candidates)",
            "{root}/{video_id}.avi",
            reader="lsmdc-mc",
            prepare="lsmdc",
        ),
    )
}


def get_zero_shot_preset(name: str, task: str) -> ZeroShotPreset:
    p = ZERO_SHOT_PRESETS.get(name)
    if p is None or p.task != task:
        names = sorted(k for k, v in ZERO_SHOT_PRESETS.items() if v.task == task)
        raise ValueError(f"unknown {task} preset {name!r}; choose one of {names}")
    return p
