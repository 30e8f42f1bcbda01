"""``clipvip corpus VIDEOS... --out DIR``: raw videos -> a post-pretraining corpus (WebDataset shards).

Subtitles come from a sidecar ``.srt``/``.vtt`` next to each video, else an embedded subtitle stream, else ASR
(``--asr MODEL``, faster-whisper). Consecutive subtitle sentences are merged into clips of ``--clip-seconds MIN:MAX``
(the HD-VILA-100M rule, see ``clipvip.corpus.clips``), cut with PyAV (``--cut``, default re-encode to
``--fps 3 --short-side 224``) and written as ``DIR/shard-NNNNN.tar`` ({key}.mp4/.json/.txt, video2dataset's layout)
with a parquet manifest and per-shard stats. ``--hdvila META.jsonl --video-root DIR`` uses HD-VILA-100M's
published clip spans instead (it downloads nothing). Resumable per shard; under torchrun / a Slurm array each rank
takes its slice of shards; ``--engine ray`` runs shards as Ray tasks. Then: ``clipvip caption DIR --captioner ...``
and ``clipvip train --config pretrain_vip_b32 --set train_data="{source: 'DIR/shard-*.tar', captions: ...}"``.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.corpus.cut import CUT_MODES
    from clipvip.jobs import ENGINES

    p = sub.add_parser(
        "corpus",
        help="build a post-pretraining corpus (subtitle-aligned clips in WebDataset shards) from raw videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="*", metavar="VIDEOS", help="video files, folders (searched recursively) or globs")
    p.add_argument("--out", required=True, help="output folder for shards, manifest and stats")
    p.add_argument("--hdvila", nargs="+", default=None, metavar="META.jsonl", help="HD-VILA-100M metadata file(s)")
    p.add_argument("--video-root", default=".", help="with --hdvila: folder holding VIDEO_ID.mp4 (or another ext)")
    c = p.add_argument_group("clips")
    c.add_argument("--clip-seconds", default="5:20", metavar="MIN:MAX", help="clip length window (default 5:20)")
    c.add_argument("--max-gap", type=float, default=3.0, help="longest silence (s) inside one clip (default 3)")
    k = p.add_argument_group("cutting")
    k.add_argument(
        "--cut",
        choices=CUT_MODES,
        default="reencode",
        help="reencode (default: exact, uniform, small), copy (keyframe-aligned, source quality), "
        "auto (copy where exact within --tolerance, else reencode)",
    )
    k.add_argument("--fps", type=float, default=3.0, help="re-encode frame rate (official preprocessing: 3)")
    k.add_argument("--short-side", type=int, default=224, help="re-encode short side (official: 224)")
    k.add_argument("--crf", type=int, default=23, help="re-encode H.264 quality")
    k.add_argument("--tolerance", type=float, default=None, help="seconds a copy may be off (default: one frame)")
    s = p.add_argument_group("subtitles")
    s.add_argument("--asr", default=None, metavar="MODEL", help="faster-whisper model (folder or size name)")
    s.add_argument("--asr-device", default="cpu")
    s.add_argument("--asr-compute-type", default="default", help="e.g. int8, float16")
    s.add_argument("--language", default=None, help="ASR language (default: detected)")
    s.add_argument("--no-embedded", action="store_true", help="ignore subtitle streams inside the videos")
    j = p.add_argument_group("job")
    j.add_argument("--videos-per-shard", type=int, default=100)
    j.add_argument("--engine", choices=ENGINES, default="local")
    j.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.set_defaults(func=run)


def _expand(specs: list[str]) -> list[str]:
    import glob
    from pathlib import Path

    from clipvip.video import VIDEO_EXTENSIONS

    out: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            found = [str(f) for f in sorted(Path(spec).rglob("*")) if f.suffix.lower() in VIDEO_EXTENSIONS]
            if not found:
                raise FileNotFoundError(f"{spec}: folder holds no videos")
            out += found
        elif os.path.isfile(spec):
            out.append(spec)
        elif any(ch in spec for ch in "*?["):
            found = sorted(glob.glob(spec))
            if not found:
                raise FileNotFoundError(f"{spec}: no file matches")
            out += found
        else:
            raise FileNotFoundError(f"{spec}: no such video, folder or glob")
    return out


def run(args: argparse.Namespace) -> int:
    from clipvip.corpus import (
        ClipRule,
        CorpusConfig,
        CorpusJob,
        CutOptions,
        VideoTask,
        find_video,
        merge_manifests,
        read_hdvila_metadata,
        summarize,
        video_tasks,
    )
    from clipvip.corpus.asr import ASRConfig
    from clipvip.jobs import run_job

    if not args.videos and not args.hdvila:
        raise ValueError("give VIDEOS (files, folders, globs) or --hdvila META.jsonl")
    if args.videos and args.hdvila:
        raise ValueError("give either VIDEOS or --hdvila, not both")
    tasks = video_tasks(_expand(args.videos)) if args.videos else []
    missing = 0
    for meta in args.hdvila or []:
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"{meta}: no such metadata file")
        for v in read_hdvila_metadata(meta):
            path = find_video(args.video_root, v.video_id)
            if path is None:
                missing += 1
                continue
            tasks.append(VideoTask(os.path.abspath(path), v.video_id, v.spans))
    if args.hdvila:
        if not tasks:
            raise FileNotFoundError(f"{args.video_root}: none of the metadata's videos is there")
        tasks.sort(key=lambda t: t.path)
    config = CorpusConfig(
        out=args.out,
        clip_rule=ClipRule.parse(args.clip_seconds, args.max_gap),
        cut=CutOptions(args.cut, args.fps, args.short_side, args.tolerance, args.crf),
        videos_per_shard=args.videos_per_shard,
        asr=ASRConfig(args.asr, args.asr_device, args.asr_compute_type, args.language) if args.asr else None,
        embedded=not args.no_embedded,
    )
    job = CorpusJob(tasks, config)
    job.prepare()
    summary = run_job(job, args.engine, address=args.address)
    manifest = merge_manifests(job)
    tot = summarize(job)
    print(
        f"corpus: {tot['clips']} clips ({tot['seconds']:.0f} s, {tot['bytes'] / 1e6:.1f} MB; {tot['copy']} copied, "
        f"{tot['reencode']} re-encoded) from {tot['videos_with_clips']} of {tot['videos']} videos in "
        f"{tot['shards_done']}/{job.num_parts} shards at {args.out} "
        f"({len(summary.ran)} built now, {len(summary.skipped_done)} already done)"
    )
    if missing:
        print(f"{missing} video(s) of the metadata are not in {args.video_root} (skipped)")
    if tot["no_subtitles"]:
        print(f"{tot['no_subtitles']} video(s) had no subtitles" + ("" if args.asr else " (add --asr MODEL for ASR)"))
    if tot["failed"]:
        print(f"{len(tot['failed'])} problem(s), listed in the shards' stats files; first:")
        for f in tot["failed"][:5]:
            print(f"  {f['reason']}")
    if manifest is not None:
        print(f"manifest: {manifest}")
    for part, why in summary.failed.items():
        print(f"shard {part} failed: {why}", file=sys.stderr)
    return 1 if summary.failed else 0
