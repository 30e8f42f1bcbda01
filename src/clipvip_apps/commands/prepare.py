"""``clipvip prepare VIDEOS --out DIR [--preset msrvtt | --fps F --short-side S]``: re-encode a benchmark's videos.

Every video under VIDEOS (recursively) is re-encoded with PyAV to a constant frame rate and short side, H.264 in
mp4, audio dropped, into the same relative path under DIR with the suffix .mp4. The job runs in parts (resumable:
run the same command again after a crash and only unfinished parts run), on one process, as a slice under torchrun /
a Slurm job array (the same command on every worker), or on Ray (``--engine ray``). Unreadable videos are skipped,
counted and named. ``DIR/prepared.json`` records the settings; ``clipvip eval --video-root DIR`` uses that layout.

Presets (``--preset``) follow the official release's preprocessing where it has one; ``--list-presets`` prints
each preset's source.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.data.prepare import PREPARE_PRESETS
    from clipvip.jobs import ENGINES

    p = sub.add_parser(
        "prepare",
        help="re-encode benchmark videos to a fixed fps and size (parallel, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", type=Path, nargs="?", help="folder with the source videos (searched recursively)")
    p.add_argument("--out", type=Path, help="output folder (must differ from VIDEOS)")
    p.add_argument(
        "--preset", choices=sorted(PREPARE_PRESETS), default=None, help="the release's settings for a benchmark"
    )
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: the preset's, else kept)")
    p.add_argument(
        "--short-side", type=int, default=None, help="short side in pixels (default: the preset's, else kept)"
    )
    p.add_argument("--keep-fps", action="store_true", help="keep the source frame rate even if the preset sets one")
    p.add_argument("--keep-size", action="store_true", help="keep the source size even if the preset sets one")
    p.add_argument("--part-size", type=int, default=64, help="videos per part (the unit of resuming) (default: 64)")
    p.add_argument("--workers", type=int, default=1, help="videos re-encoded at once per process (default: 1)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default: 23, FFmpeg's)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="local (also torchrun/Slurm slices) or ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--list-presets", action="store_true", help="print every preset, its settings and source")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip.data.prepare import PREPARE_PRESETS, get_prepare_preset, make_job
    from clipvip.jobs import run_job

    if args.list_presets:
        for pr in PREPARE_PRESETS.values():
            fps = "source fps" if pr.fps is None else f"{pr.fps:g} fps"
            size = "source size" if pr.short_side is None else f"short side {pr.short_side}"
            print(f"{pr.name}: {fps}, {size}\n    source: {pr.source}")
        return 0
    if args.videos is None or args.out is None:
        raise ValueError("give the video folder and --out (or --list-presets)")
    preset = get_prepare_preset(args.preset) if args.preset else None
    fps = args.fps if args.fps is not None else (preset.fps if preset else None)
    short_side = args.short_side if args.short_side is not None else (preset.short_side if preset else None)
    fps = None if args.keep_fps else fps
    short_side = None if args.keep_size else short_side
    if preset is None and fps is None and short_side is None:
        raise ValueError("nothing to do: give --preset, --fps and/or --short-side")
    job = make_job(args.videos, args.out, fps, short_side, part_size=args.part_size, workers=args.workers, crf=args.crf)
    print(
        f"{len(job.sources)} videos in {job.num_parts} parts -> {args.out} "
        f"({'source' if fps is None else f'{fps:g}'} fps, short side {short_side or 'kept'})"
    )
    summary = run_job(job, args.engine, address=args.address)
    written, existing = summary.total("written"), summary.total("existing")
    print(
        f"parts: {len(summary.ran)} run, {len(summary.skipped_done)} already done, {len(summary.failed)} failed; "
        f"videos: {written} written, {existing} already there, {len(summary.failed_samples())} unreadable "
        f"({summary.seconds:.1f} s, {written / max(summary.seconds, 1e-9):.1f} videos/s)"
    )
    for line in summary.failure_lines(where=f"{args.out / 'prepared.json'} when all parts are done"):
        print(line)
    manifest = job.write_manifest(preset.name if preset else None)
    if manifest is not None:
        print(f"wrote {manifest}")
    else:
        print("some parts are unfinished (other workers, or failed parts): run again to finish them")
    return 1 if summary.failed else 0
