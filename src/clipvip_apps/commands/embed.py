"""``clipvip embed INPUT... --model M --out DIR [--engine local|ray]``: a resumable, sharded embedding job.

INPUT: a folder of videos, manifests (jsonl/csv/parquet with a path column), or WebDataset shards; local paths or
fsspec URLs. The output folder (``embeddings/emb_N.npy`` + ``metadata/metadata_N.parquet`` + ``stats/``) is what
clip-retrieval writes, so embedding-reader reads it, and ``clipvip index --from-embeddings DIR`` indexes it. Under
torchrun or a Slurm job array each process runs its own slice of the parts; a rerun skips finished parts."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed many videos into a sharded, resumable embedding folder")
    p.add_argument("inputs", nargs="+", help="folder, manifest(s) or .tar shards (globs, {a..b} ranges, URLs)")
    p.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads)")
    p.add_argument("--out", required=True, help="output folder (created; a rerun resumes it)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local: this process (or its "
                   "torchrun/Slurm slice); ray: a Ray Data pipeline")  # fmt: skip
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--encoders", type=int, default=None, help="Ray encoder actors (default: one per GPU, else 1)")
    p.add_argument("--rows-per-part", type=int, default=1000, help="videos per part for folders and manifests")
    p.add_argument("--fp32", action="store_true", help="store fp32 embeddings (default fp16)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per video/window (default: the model's)")
    p.add_argument("--window", type=float, default=None, help="seconds: one row per window of longer videos")
    p.add_argument("--stride", type=float, default=None, help="seconds between window starts (default --window)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="decoders (local engine)")
    p.add_argument("--decode-in", choices=["processes", "threads"], default="processes",
                   help="local engine: decode in worker processes writing to shared memory (default), or threads")  # fmt: skip
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="encoder precision")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip.embedjob import EmbedConfig, plan_parts, prepare_job
    from clipvip.jobs import run_job

    cfg = EmbedConfig(
        model=args.model,
        out=args.out,
        num_frames=args.num_frames,
        window=args.window,
        stride=args.stride,
        batch_size=args.batch_size,
        dtype="fp32" if args.fp32 else "fp16",
        decode_workers=args.workers,
        decode_in=args.decode_in,
        precision=args.precision,
    )
    job = prepare_job(cfg, plan_parts(args.inputs, args.rows_per_part))
    if args.engine == "ray":
        from clipvip.embedjob.ray_data import run_embed_ray

        summary = run_embed_ray(job, address=args.address, num_encoders=args.encoders, progress=not args.quiet)
    else:
        summary = run_job(job, "local", progress=not args.quiet)
    print(
        f"{args.out}: {len(summary.ran)} parts written, {len(summary.skipped_done)} already done, "
        f"{len(summary.failed)} failed; {summary.total('done')} videos, {summary.total('rows')} rows, "
        f"{len(summary.failed_samples())} files skipped in {summary.seconds:.1f}s"
    )
    for line in summary.failure_lines(limit=20, where=f"{args.out}/stats/"):
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0
