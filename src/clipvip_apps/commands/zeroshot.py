"""``clipvip zeroshot classify|mc``: the paper's zero-shot tasks (Appendix A) on your video files.

classify: ``--labels`` (HMDB51 / UCF101 / Kinetics-400 label map, SSv2 json, classInd.txt, ...) and ``--videos``, a
list file with one ``<video path> <class>`` per line (class = index or name, names may contain spaces: Kinetics
"flipping pancake"; a tab between path and class also works; paths relative to the list file or ``--video-root``),
or ``<video path>`` alone with the class taken from the parent folder name (the UCF101 / HMDB51 layout). Prompts:
"a person [label]" (``--templates paper``), an ensemble, ``identity`` (the label itself), or your own
``--template "a video of {}."`` (repeatable).
``--preset hmdb51``: the paper's prompt. ``--preset ssv2-mc``: SSv2 as the paper runs it, ``--videos`` being the
SSv2 ``validation.json``; every video chooses among all label texts (see the note in the output).

mc: ``--questions`` with ``--preset msrvtt-mc`` (JSFusion ``MSR_MC_test.csv``) or ``--preset lsmdc-mc``
(``LSMDC16_multiple_choice_test_randomized.csv``), videos under ``--video-root`` in the official layout (or a folder
written by ``clipvip prepare``); without a preset, a jsonl with one ``{"video": path, "candidates": [...],
"answer": index}`` per line.

Videos that cannot be read are skipped and named by file in the output; when the paper reports the task for the
model's backbone, its number is printed next to this run's (labelled "paper", with table and row).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class VideoFiles(Dataset):
    """Uniformly sampled, CLIP-normalised frames of a list of files; unreadable files become ``clipvip.data``
    skip markers, so ``clipvip.data.collate`` drops and reports them."""

    def __init__(self, paths: list[str], num_frames: int, size: int) -> None:
        self.paths, self.num_frames, self.size = paths, num_frames, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from clipvip.video import VideoDecodeError, normalize, read_frames

        try:
            vf = read_frames(self.paths[i], num_frames=self.num_frames, size=self.size, threads=1)
        except VideoDecodeError as e:
            return {"skipped": {"path": self.paths[i], "reason": e.reason, "video_index": i}}
        frames = vf.frames
        if frames.shape[0] != self.num_frames:  # an image
            frames = frames.expand(self.num_frames, -1, -1, -1)
        return {"video": normalize(frames), "video_index": i}


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.distributed import default_num_workers

    p = sub.add_parser(
        "zeroshot",
        help="zero-shot action recognition and multiple choice (paper Appendix A)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads)")
    common.add_argument("--video-root", type=Path, default=None, help="base folder for relative video paths")
    common.add_argument("--num-frames", type=int, default=None, help="default: the preset's, else the model's")
    common.add_argument("--batch-size", type=int, default=16)
    common.add_argument(
        "--num-workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader workers decoding videos (default: the CPUs available, minus one: %(default)s here)",
    )
    common.add_argument("--device", default=None)
    common.add_argument("--context-length", type=int, default=None)
    common.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    c = tasks.add_parser("classify", parents=[common], help="top-1 / top-5 accuracy over prompted class names")
    c.add_argument("--preset", choices=_preset_names("classify"), default=None, help="a task of Appendix A")
    c.add_argument("--labels", type=Path, required=True, help="label list (class-index order)")
    c.add_argument(
        "--videos", type=Path, required=True, help="list file: '<path> [<class>]' per line (ssv2-mc: validation.json)"
    )
    c.add_argument(
        "--fill-placeholders",
        action="store_true",
        help="ssv2-mc: fill the 'something' slots of every label text with the video's annotated objects",
    )
    c.add_argument("--templates", choices=["paper", "ensemble", "identity"], default="paper")
    c.add_argument("--template", action="append", default=None, help="custom template with {} (repeatable)")
    c.set_defaults(func=run_classify)
    m = tasks.add_parser("mc", parents=[common], help="multiple choice accuracy (MSR-VTT MC / LSMDC MC)")
    m.add_argument("--preset", choices=_preset_names("mc"), default=None, help="official file format and layout")
    m.add_argument(
        "--questions",
        type=Path,
        required=True,
        help='the preset\'s file, else jsonl: {"video", "candidates", "answer"}',
    )
    m.set_defaults(func=run_mc)


def _preset_names(task: str) -> list[str]:
    from clipvip.eval.presets import ZERO_SHOT_PRESETS

    return sorted(k for k, v in ZERO_SHOT_PRESETS.items() if v.task == task)


def _resolve(path: str, list_file: Path, root: Path | None) -> str:
    p = Path(path)
    if p.is_absolute():
        return str(p)
    return str((root or list_file.parent) / p)


@functools.cache
def _path_then_label() -> re.Pattern[str]:
    """'<path ending in a video extension> [label]', compiled once (a list file has one line per video); built on
    first use because ``clipvip.video.read`` pulls in the decoders."""
    from clipvip.video.read import VIDEO_EXTENSIONS

    exts = "|".join(re.escape(e.lstrip(".")) for e in sorted(VIDEO_EXTENSIONS, key=len, reverse=True))
    return re.compile(rf"^(?P<video>.+?\.(?:{exts}))(?:\s+(?P<label>.+))?$", re.IGNORECASE)


def _split_line(line: str) -> tuple[str, str | None]:
    """'<path> <class with spaces>' -> (path, class): a tab separates them if present, else the path ends at its
    video extension, else at the last space (paths without an extension, single-word classes)."""
    if "\t" in line:
        video, _, label = line.partition("\t")
        return video.strip(), label.strip() or None
    m = _path_then_label().match(line)
    if m:
        return m.group("video"), m.group("label")
    parts = line.rsplit(maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], None)


def _class_key(name: str) -> str:
    """Class names compare as words: 'flipping pancake' == 'flipping_pancake' == 'FlippingPancake'."""
    from clipvip.eval.zeroshot import label_to_text

    return label_to_text(name)


def read_video_list(path: Path, classes: list[str], root: Path | None) -> tuple[list[str], list[int]]:
    """(video paths, class indices) from a '<path> [<class>]' list; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video list not found")
    by_name = {c: i for i, c in enumerate(classes)}
    by_key = {_class_key(c): i for i, c in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        video, label = _split_line(line)
        if label is None:
            label = Path(video).parent.name
        if label in by_name:
            idx = by_name[label]
        elif label.isdigit():
            idx = int(label)
        else:
            idx = by_key.get(_class_key(label), -1)
        if not 0 <= idx < len(classes):
            raise ValueError(f"{path}:{n}: class {label!r} is not in the label list ({len(classes)} classes)")
        paths.append(_resolve(video, path, root))
        labels.append(idx)
    if not paths:
        raise ValueError(f"{path}: no videos listed")
    return paths, labels


def _model(args: argparse.Namespace) -> Any:
    import clipvip

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return clipvip.load(args.model).to(device).eval()


def _video_embeddings(
    model: Any, paths: list[str], args: argparse.Namespace, num_frames: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(embeddings with NaN rows for unreadable videos, valid mask, the unreadable files)."""
    from clipvip.eval import embed_videos, embedding_valid_mask

    frames = args.num_frames or num_frames or model.config.num_frames
    ds = VideoFiles(paths, frames, model.config.vision.image_size)
    emb = embed_videos(model, ds, args.batch_size, args.num_workers)
    valid = embedding_valid_mask(emb)
    bad = [paths[i] for i in torch.nonzero(~valid).flatten().tolist()]
    if not valid.any():
        raise ValueError(f"no video could be read (e.g. {bad[0]})")
    return emb, valid, bad


def _preset(args: argparse.Namespace, task: str) -> Any:
    from clipvip.eval.presets import get_zero_shot_preset

    return get_zero_shot_preset(args.preset, task) if args.preset else None


def _finish(result: dict[str, Any], args: argparse.Namespace, model: Any) -> int:
    from clipvip.eval.paper import backbone_of, comparison, comparison_lines
    from clipvip.io import atomic_write_json

    if args.preset:
        result["paper"] = comparison(result, args.preset, backbone_of(model))
    print(json.dumps(result, indent=2))
    for line in comparison_lines(result.get("paper") or []):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, result)
    return 0


def _skips(bad: list[str]) -> dict[str, Any]:
    if bad:
        log.warning("%d videos could not be read and are excluded, e.g. %s", len(bad), bad[0])
    return {"skipped_videos": len(bad), "skipped_files": bad}


def _official_paths(ids: list[str], preset: Any, root: Path | None, where: Path) -> list[str]:
    """Video ids -> files in the preset's layout under ``root`` (or the ``clipvip prepare`` layout)."""
    from clipvip.data.annotations import Sample, video_path
    from clipvip.data.prepare import read_manifest
    from clipvip.eval.presets import prepared_template

    if root is None:
        raise ValueError(f"{where}: give --video-root, the folder with the {preset.name} videos")
    template = preset.video_template
    if read_manifest(root) is not None:
        template = prepared_template(template)
    return [video_path(Sample(v, []), template, root) for v in ids]


def run_classify(args: argparse.Namespace) -> int:
    from clipvip.eval import ENSEMBLE_TEMPLATES, PAPER_TEMPLATES, class_text_embeddings, read_labels
    from clipvip.eval.zeroshot import IDENTITY_TEMPLATES

    preset = _preset(args, "classify")
    classes = read_labels(args.labels)
    if preset is not None and preset.name == "ssv2-mc":
        return _run_ssv2(args, preset, classes)
    paths, labels = read_video_list(args.videos, classes, args.video_root)
    if args.template:
        templates, convert = args.template, True
    elif preset is not None:
        templates, convert = list(preset.templates), preset.convert
    else:
        named = {"paper": PAPER_TEMPLATES, "ensemble": ENSEMBLE_TEMPLATES, "identity": IDENTITY_TEMPLATES}
        templates, convert = list(named[args.templates]), True
    model = _model(args)
    context = args.context_length or (preset.context_length if preset else None)
    class_emb = class_text_embeddings(model, classes, templates, context_length=context, convert=convert)
    emb, valid, bad = _video_embeddings(model, paths, args, preset.num_frames if preset else None)
    res = _classify(emb, valid, class_emb, labels)
    return _finish({**res, **_skips(bad), "classes": len(classes), "templates": list(templates)}, args, model)


def _classify(emb: torch.Tensor, valid: torch.Tensor, class_emb: torch.Tensor, labels: list[int]) -> dict[str, Any]:
    from clipvip.eval import zero_shot_classify

    keep = valid.tolist()
    res = zero_shot_classify(emb[valid], class_emb, [lab for lab, k in zip(labels, keep) if k])
    res["accuracy"] = res["top1"]
    return res


def _run_ssv2(args: argparse.Namespace, preset: Any, classes: list[str]) -> int:
    """Every label text is a candidate for every video (the label file's text, or filled with the video's objects)."""
    from clipvip.data.multiple_choice import fill_something, read_ssv2
    from clipvip.eval import embed_texts, multiple_choice

    videos = read_ssv2(args.videos, classes)
    paths = _official_paths([v.video_id for v in videos], preset, args.video_root, args.videos)
    model = _model(args)
    context = args.context_length or preset.context_length
    emb, valid, bad = _video_embeddings(model, paths, args, preset.num_frames)
    keep = valid.tolist()
    kept = [v for v, k in zip(videos, keep) if k]
    if args.fill_placeholders:
        # per-video candidates (multiple_choice embeds each distinct sentence once)
        cands = [[fill_something(c, v.placeholders) for c in classes] for v in kept]
        res = multiple_choice(
            model, emb[valid], cands, [v.label for v in kept], context_length=context, batch_size=256, progress=True
        )
    else:
        text_emb = embed_texts(model, [" ".join(c.split()) for c in classes], 256, context, progress=False)
        res = _classify(emb, valid, text_emb, [v.label for v in videos])
    res = {
        **res,
        **_skips(bad),
        "candidates_per_video": len(classes),
        "filled_placeholders": bool(args.fill_placeholders),
        "note": preset.note,
    }
    return _finish(res, args, model)


def run_mc(args: argparse.Namespace) -> int:
    from clipvip.data.multiple_choice import MC_READERS
    from clipvip.eval import multiple_choice

    preset = _preset(args, "mc")
    questions = MC_READERS[preset.reader if preset else "jsonl"](args.questions)
    if preset is None:
        paths = [_resolve(q.video_id, args.questions, args.video_root) for q in questions]
    else:
        paths = _official_paths([q.video_id for q in questions], preset, args.video_root, args.questions)
    model = _model(args)
    emb, valid, bad = _video_embeddings(model, paths, args, preset.num_frames if preset else None)
    keep = valid.tolist()
    kept = [q for q, k in zip(questions, keep) if k]
    res = multiple_choice(
        model,
        emb[valid],
        [list(q.candidates) for q in kept],
        [q.answer for q in kept],
        context_length=args.context_length or (preset.context_length if preset else None),
    )
    return _finish({**res, **_skips(bad), "questions": len(questions)}, args, model)
