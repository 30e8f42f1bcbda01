"""``clipvip index VIDEO_DIR --model M --out INDEX``: create or incrementally update a searchable video index."""

from __future__ import annotations

import argparse

from clipvip_apps.commands._inference import add_inference_args, prepare_for_inference


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip.distributed import default_num_workers

    p = sub.add_parser("index", help="index a folder of videos for search (incremental: re-runs encode only changes)")
    p.add_argument("video_dir", nargs="?", help="folder to walk (recursive)")
    p.add_argument("--model", help="folder, weights file, hub id (org/name), open_clip NAME:TAG or URL")
    p.add_argument(
        "--from-embeddings",
        metavar="DIR",
        help="index a `clipvip embed` folder instead: compressed IVF-PQ, on-disk lists, exact re-rank",
    )
    p.add_argument("--max-index-memory", default="4G", help="RAM budget of a --from-embeddings index (e.g. 4G)")
    p.add_argument("--opq", action="store_true", help="--from-embeddings: rotate (OPQ) before PQ; slower to train")
    p.add_argument("--max-nprobe", type=int, default=None, help="--from-embeddings: most lists a search may scan "
                   "(default: max(256, nlist/8)); more raises recall and latency")  # fmt: skip
    p.add_argument("--retune", action="store_true", help="--from-embeddings: only tune nprobe and the re-rank depth "
                   "of the existing index at --out again (e.g. with another --max-nprobe); no rebuild")  # fmt: skip
    p.add_argument("--out", required=True, help="index folder (created or updated)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per video/window (default: the model's)")
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds: split videos longer than this into windows, so a query can land on a moment",
    )
    p.add_argument("--stride", type=float, default=None, help="seconds between window starts (default --window)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--workers",
        type=int,
        default=default_num_workers(),
        help="decoding threads (default: the CPUs available, minus one: %(default)s here)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--reindex",
        action="store_true",
        help="re-encode every video (needed to switch an index to another model; other --window / --num-frames / "
        "--stride settings re-encode by themselves)",
    )
    add_inference_args(p)
    p.set_defaults(func=run, on_interrupt="rerun the same command to resume (encoded work is kept)")


def run(args: argparse.Namespace) -> int:
    if args.from_embeddings:
        return _run_from_embeddings(args)
    if not args.video_dir or not args.model:
        raise ValueError("give VIDEO_DIR and --model (or --from-embeddings DIR)")
    import clipvip
    from clipvip.index import IndexConfig, build_index, model_fingerprint

    if args.window is not None and args.window <= 0:
        raise ValueError(f"--window must be > 0 seconds, got {args.window}")
    if args.stride is not None and (args.window is None or args.stride <= 0):
        raise ValueError("--stride needs --window and must be > 0")
    model = clipvip.load(args.model, num_frames=args.num_frames)
    fingerprint = model_fingerprint(model)  # of the weights as stored, before any bf16 cast
    model = prepare_for_inference(model, args)
    cfg = IndexConfig(
        num_frames=args.num_frames,
        window=args.window,
        stride=args.stride,
        batch_size=args.batch_size,
        decode_workers=args.workers,
        reindex=args.reindex,
    )
    report = build_index(
        args.video_dir, args.out, model, args.model, cfg, progress=not args.quiet, fingerprint=fingerprint
    )
    print(report.summary())
    return 0


def _run_from_embeddings(args: argparse.Namespace) -> int:
    from clipvip.index.budget import OnDiskConfig, parse_size
    from clipvip.index.ondisk import build_from_embeddings, retune

    if args.video_dir or args.model:
        raise ValueError("--from-embeddings takes the model from the embedding folder; drop VIDEO_DIR/--model")
    cfg = OnDiskConfig(max_index_memory=parse_size(args.max_index_memory), opq=args.opq, max_nprobe=args.max_nprobe)
    if args.retune:
        print(retune(args.out, cfg).summary())
    else:
        print(build_from_embeddings(args.from_embeddings, args.out, cfg, progress=not args.quiet).summary())
    return 0
