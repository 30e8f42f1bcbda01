"""``clipvip zeroshot classify|mc``: the paper's zero-shot tasks (Appendix A) on your video files.

classify: ``--labels`` (HMDB51 / UCF101 / Kinetics-400 label map, SSv2 json, classInd.txt, ...) and ``--videos``, a
list file with one ``<video path> <class>`` per line (class = index or name; paths relative to the list file or
``--video-root``), or ``<video path>`` alone with the class taken from the parent folder name (the UCF101 / HMDB51
layout). Prompts: "a person [label]" (``--templates paper``), an ensemble, ``identity`` (the label itself, for
SSv2-as-choice over all templates), or your own ``--template "a video of {}."`` (repeatable).

mc: ``--questions`` jsonl, one ``{"video": path, "candidates": [5 sentences], "answer": index}`` per line.
"""

from __future__ import annotations

import argparse
import json
import logging
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
    common.add_argument("--num-frames", type=int, default=None, help="default: the model's")
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
    c.add_argument("--labels", type=Path, required=True, help="label list (class-index order)")
    c.add_argument("--videos", type=Path, required=True, help="list file: '<path> [<class>]' per line")
    c.add_argument("--templates", choices=["paper", "ensemble", "identity"], default="paper")
    c.add_argument("--template", action="append", default=None, help="custom template with {} (repeatable)")
    c.set_defaults(func=run_classify)
    m = tasks.add_parser("mc", parents=[common], help="multiple choice accuracy (MSR-VTT MC / LSMDC MC style)")
    m.add_argument("--questions", type=Path, required=True, help='jsonl: {"video", "candidates", "answer"}')
    m.set_defaults(func=run_mc)


def _resolve(path: str, list_file: Path, root: Path | None) -> str:
    p = Path(path)
    if p.is_absolute():
        return str(p)
    return str((root or list_file.parent) / p)


def read_video_list(path: Path, classes: list[str], root: Path | None) -> tuple[list[str], list[int]]:
    """(video paths, class indices) from a '<path> [<class>]' list; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video list not found")
    by_name = {c: i for i, c in enumerate(classes)}
    by_name.update({c.lower().replace(" ", "_"): i for i, c in enumerate(classes)})
    paths, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1) if " " in line or "\t" in line else [line]
        video, label = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], Path(parts[0]).parent.name)
        if label.isdigit() and label not in by_name:
            idx = int(label)
        else:
            idx = by_name.get(label, by_name.get(label.lower().replace(" ", "_"), -1))
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


def _video_embeddings(model: Any, paths: list[str], args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    from clipvip.eval import embed_videos, embedding_valid_mask

    ds = VideoFiles(paths, args.num_frames or model.config.num_frames, model.config.vision.image_size)
    emb = embed_videos(model, ds, args.batch_size, args.num_workers)
    valid = embedding_valid_mask(emb)
    if not valid.any():
        raise ValueError("no video could be read")
    return emb, valid


def _finish(result: dict[str, Any], args: argparse.Namespace) -> int:
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.json)
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from clipvip.eval import (
        ENSEMBLE_TEMPLATES,
        PAPER_TEMPLATES,
        class_text_embeddings,
        read_labels,
        zero_shot_classify,
    )
    from clipvip.eval.zeroshot import IDENTITY_TEMPLATES

    classes = read_labels(args.labels)
    paths, labels = read_video_list(args.videos, classes, args.video_root)
    templates = (
        args.template
        or {"paper": PAPER_TEMPLATES, "ensemble": ENSEMBLE_TEMPLATES, "identity": IDENTITY_TEMPLATES}[args.templates]
    )
    model = _model(args)
    class_emb = class_text_embeddings(model, classes, templates, context_length=args.context_length)
    emb, valid = _video_embeddings(model, paths, args)
    keep = valid.numpy()
    res = zero_shot_classify(emb[valid], class_emb, [lab for lab, k in zip(labels, keep) if k])
    return _finish(
        {**res, "skipped_videos": int((~valid).sum()), "classes": len(classes), "templates": list(templates)}, args
    )


def run_mc(args: argparse.Namespace) -> int:
    from clipvip.eval import multiple_choice

    if not args.questions.is_file():
        raise FileNotFoundError(f"{args.questions}: questions file not found")
    paths, cands, answers = [], [], []
    for n, line in enumerate(args.questions.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            paths.append(_resolve(str(q["video"]), args.questions, args.video_root))
            cands.append([str(c) for c in q["candidates"]])
            answers.append(int(q["answer"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{args.questions}:{n}: expected {{video, candidates, answer}} ({e})") from e
        if not 0 <= answers[-1] < len(cands[-1]):
            raise ValueError(f"{args.questions}:{n}: answer {answers[-1]} out of range")
    model = _model(args)
    emb, valid = _video_embeddings(model, paths, args)
    keep = valid.numpy().tolist()
    res = multiple_choice(
        model,
        emb[valid],
        [c for c, k in zip(cands, keep) if k],
        [a for a, k in zip(answers, keep) if k],
        context_length=args.context_length,
    )
    return _finish({**res, "skipped_videos": int((~valid).sum())}, args)
