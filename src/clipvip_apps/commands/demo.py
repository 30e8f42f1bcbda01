"""``clipvip demo [--quick] [--out DIR] [--seeds N] [--split test|val]``: the whole CLIP-ViP recipe in a synthetic
world, on CPU, with the paper's claims tested as paired differences over seeds."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run CLIP-ViP end to end in a synthetic video world (CLIP stage, post-pretraining, ablations, search)",
        description="Generates a seeded synthetic video-language world, trains a tiny image-text CLIP, "
        "post-pretrains and fine-tunes it with the library's trainer, and reports the paper's Tables 2-4 and 7 "
        "ablations, the paper's claims as paired differences over seeds with 95% intervals, and example searches. "
        "See the README for measured times.",
    )
    p.add_argument("--quick", action="store_true", help="small world, short runs, 2 seeds (CI smoke test)")
    p.add_argument("--out", default="clipvip-demo", help="output folder (default: ./clipvip-demo)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default: 5, or 2 with --quick)")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="evaluation split (default: test; val = the validation pairs, for choosing settings)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: 1)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for the seeds (default: 2; 1 runs them in this process)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip_apps.demo import DemoConfig, print_tables, run_demo

    overrides = {"out": args.out, "progress": not args.no_progress, "eval_split": args.split}
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        overrides["seeds"] = args.seeds
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        overrides["threads"] = args.threads
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        overrides["workers"] = args.workers
    cfg = DemoConfig.preset(args.quick, **overrides)
    results = run_demo(cfg)
    print_tables(results)
    t = results["timings_s"]
    print(
        f"\nwrote {args.out}/report.md, results.json, claims.png, training_curves.png, recall_bars.png, "
        f"query_grid.png in {t['total']:.0f} s ({t['cpu_total']:.0f} s CPU)"
    )
    return 0
