"""``clipvip eval --model M --preset msrvtt-1ka --data-root DIR --video-root DIR``: text <-> video retrieval.

Encodes the test videos and texts (batched, progress bars, embeddings cached on disk keyed by model and data so a
second run is instant), prints a table with both directions (text->video, video->text) with and without DSL, how
many videos and texts were evaluated and how many were missing (no file, unreadable: named), and, when the paper
reports this preset for the model's backbone (ViT-B/32, B/16), the paper's number with its table and row. Writes
``results.json`` + ``results.md`` (+ ``recall.png`` with ``--plot``) to ``--out``. A ``--video-root`` written by
``clipvip prepare`` is read in its layout (``<root>/<video_id>.mp4``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from clipvip_apps.commands._inference import add_inference_args, prepare_for_inference

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipvip" / "eval"


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.distributed import default_num_workers
    from clipvip.eval.presets import PRESETS

    p = sub.add_parser(
        "eval",
        help="evaluate text<->video retrieval on a benchmark preset (R@1/5/10, MdR, MnR; with and without DSL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads)")
    p.add_argument(
        "--preset", required=True, choices=sorted(PRESETS), help="benchmark: annotation format, frames, text length"
    )
    p.add_argument("--data-root", type=Path, default=Path("."), help="folder holding the preset's annotation files")
    p.add_argument(
        "--annotation", type=Path, default=None, help="annotation file (default: the preset's, under --data-root)"
    )
    p.add_argument("--split-list", type=Path, default=None, help="split id list (MSVD; default: the preset's)")
    p.add_argument("--video-root", type=Path, required=True, help="folder with the videos")
    p.add_argument(
        "--video-template", default=None, help="path template, e.g. '{root}/{video_id}.mp4' (default: official)"
    )
    p.add_argument("--num-frames", type=int, default=None, help="frames per video (default: the preset's)")
    p.add_argument("--context-length", type=int, default=None, help="text tokens (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch")
    p.add_argument("--text-batch-size", type=int, default=256)
    p.add_argument(
        "--num-workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader workers decoding videos (default: the CPUs available, minus one: %(default)s here)",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="fp16 autocast for the vision tower on CUDA")
    p.add_argument("--ties", choices=["optimistic", "pessimistic", "mean"], default="optimistic")
    p.add_argument("--no-dsl", action="store_true", help="skip the DSL rows")
    p.add_argument(
        "--query-bank",
        type=Path,
        default=None,
        help="text file of bank captions (e.g. training captions, one per line): adds a QB-Norm row",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help=f"embedding cache (default: {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--out", type=Path, default=Path("eval_results"), help="output folder")
    p.add_argument("--plot", action="store_true", help="also write recall curves (R@K, K=1..50) as recall.png")
    add_inference_args(p)
    p.set_defaults(func=run)


def build_dataset(args: argparse.Namespace, preset: Any, image_size: int) -> Any:
    """The eval-split ``clipvip.data.RetrievalDataset`` for a preset (files resolved, missing videos reported)."""
    from clipvip import data

    annotation = args.annotation or args.data_root / preset.annotation
    split_list = args.split_list or (args.data_root / preset.split_list if preset.split_list else None)
    if not Path(annotation).is_file():
        raise FileNotFoundError(
            f"{annotation}: annotation file for preset {preset.name!r} not found (pass --annotation or --data-root)"
        )
    return data.RetrievalDataset(
        annotation,
        video_root=args.video_root,
        split="eval",
        num_frames=args.num_frames or preset.num_frames,
        size=image_size,
        fmt=preset.fmt,
        template=args.video_template or video_template(args.video_root, preset),
        annotation_options={"split_list": split_list} if split_list else None,
    )


def video_template(video_root: Path, preset: Any) -> str | None:
    """The prepared layout when ``video_root`` was written by ``clipvip prepare``, else the preset's own."""
    from clipvip.data.prepare import read_manifest
    from clipvip.eval.presets import prepared_template

    return prepared_template(preset.fmt) if read_manifest(video_root) is not None else preset.video_template


def prepared_settings(video_root: Path, prepare_preset: str | None) -> dict[str, Any] | None:
    """The ``prepared.json`` settings of ``video_root`` (None for raw videos); warns when they are not the ones
    of the preset the paper's videos were prepared with."""
    from clipvip.data.prepare import PREPARE_PRESETS, read_manifest

    m = read_manifest(video_root)
    if m is None:
        return None
    got = {"fps": m.get("fps"), "short_side": m.get("short_side")}
    ref = PREPARE_PRESETS.get(prepare_preset or "")
    if ref is not None and (got["fps"], got["short_side"]) != (ref.fps, ref.short_side):
        log.warning(
            "%s was prepared with fps=%s short_side=%s; the release's %r setting is fps=%s short_side=%s",
            video_root,
            got["fps"],
            got["short_side"],
            ref.name,
            ref.fps,
            ref.short_side,
        )
    return {**got, "preset": m.get("preset"), "videos": m.get("videos"), "failed": len(m.get("failed") or [])}


def run(args: argparse.Namespace) -> int:
    import torch

    import clipvip
    from clipvip.eval import evaluate_retrieval
    from clipvip.eval.nmi import read_texts
    from clipvip.eval.paper import backbone_of, comparison
    from clipvip.eval.presets import get_preset
    from clipvip.eval.report import markdown_table, plot_recall_curves, write_json, write_markdown
    from clipvip.weights.card import record_eval

    preset = get_preset(args.preset)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = prepare_for_inference(clipvip.load(args.model).to(device), args)
    dataset = build_dataset(args, preset, model.config.vision.image_size)
    bank = read_texts(args.query_bank) if args.query_bank else None
    context_length = args.context_length or preset.context_length
    result = evaluate_retrieval(
        model,
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        use_dsl=not args.no_dsl,
        ties=args.ties,
        text_batch_size=args.text_batch_size,
        context_length=context_length,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        amp=args.amp,
        query_bank_texts=bank,
        keep_ranks=args.plot,
    )
    ranks = result.pop("ranks", None)
    annotation = Path(args.annotation or args.data_root / preset.annotation)
    result["settings"] = {
        "model": str(args.model),
        "preset": preset.name,
        "annotation": str(annotation),
        "video_root": str(args.video_root),
        "prepared": prepared_settings(args.video_root, preset.prepare),
        "num_frames": args.num_frames or preset.num_frames,
        "context_length": context_length,
        "ties": args.ties,
    }
    result["paper"] = comparison(result, preset.name, backbone_of(model))
    counts = result["counts"]
    title = (
        f"{preset.title or preset.name} ({annotation.name}): {counts['evaluated_videos']} videos, "
        f"{counts['evaluated_texts']} texts - {Path(args.model).name}"
    )
    print(markdown_table(result, title))
    out = Path(args.out)
    write_json(result, out / "results.json")
    write_markdown(result, out / "results.md", title)
    written = [out / "results.json", out / "results.md"]
    if ranks is not None:
        written.append(plot_recall_curves(ranks, out / "recall.png", title=preset.name))
    card = record_eval(args.model, result)  # a local clipvip folder: its model card lists this result
    written += [card] if card is not None else []
    print("wrote " + ", ".join(str(p) for p in written) + (" (embeddings from cache)" if result["from_cache"] else ""))
    return 0
