"""``clipvip train --config CONFIG.yaml [--set key=value ...] [--resume]``: post-pretraining or fine-tuning.

Multi-GPU / multi-node: launch the same command under torchrun, e.g.
``torchrun --nproc_per_node 8 -m clipvip_apps.cli train --config finetune_msrvtt`` (see ``clipvip.distributed``).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from clipvip_apps.train.data_args import schema_text

    p = sub.add_parser(
        "train",
        help="post-pretrain (OCL) or fine-tune CLIP-ViP from a YAML config",
        description="Post-pretrain (OCL) or fine-tune CLIP-ViP from a YAML config. Own videos with captions: "
        "--config finetune_msrvtt --set init=openai/clip-vit-base-patch32 --set train_data.samples=my.jsonl "
        '(rows {"video": "clips/a.mp4", "caption": "..."}).',
        epilog=schema_text(),
    )
    p.add_argument(
        "--config",
        required=True,
        help="YAML file, or a bundled preset name (pretrain_vip_b32, finetune_msrvtt, tiny, ...)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value; a.b=v for nested data arguments); repeatable",
    )
    p.add_argument("--resume", action="store_true", help="continue exactly from RUN_DIR/checkpoints/last.pt")
    p.set_defaults(func=run, on_interrupt="add --resume to continue from the last checkpoint")


def run(args: argparse.Namespace) -> int:
    import sys

    from clipvip.distributed import cleanup, rank
    from clipvip_apps.train import NonFiniteLossError, load_config, train

    cfg = load_config(args.config, args.overrides)
    try:
        result = train(cfg, resume=args.resume)
        is_main = rank() == 0
    except NonFiniteLossError as e:
        print(f"clipvip train: {e}", file=sys.stderr)
        return 3
    finally:
        cleanup()
    if not is_main:
        return 0
    print(f"done: {result.global_step} steps; last checkpoint {result.last_checkpoint}; model {result.model_dir}")
    if result.best_checkpoint is not None:
        print(f"best {cfg.best_metric} = {result.best_metric:.3f}: {result.best_checkpoint} ({result.best_model_dir})")
    if result.skipped:
        print(f"{result.skipped} bad sample(s) were skipped (see the log)")
    return 0
