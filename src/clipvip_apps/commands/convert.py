"""``clipvip convert SRC DST``: any supported checkpoint -> our folder format."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipvip.config import VARIANTS
from clipvip.model.clipvip import CONFIG_NAME, WEIGHTS_NAME


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a CLIP / HF CLIP / official CLIP-ViP checkpoint to a clipvip folder")
    p.add_argument("src", help="checkpoint file or folder")
    p.add_argument("dst", help="output folder (config.json + model.safetensors)")
    p.add_argument("--variant", choices=VARIANTS, default=None)
    p.add_argument("--num-frames", type=int, default=None)
    p.add_argument(
        "--act",
        choices=["quick_gelu", "gelu"],
        default=None,
        help="activation for bare OpenAI/open_clip state dicts (default quick_gelu)",
    )
    heads = p.add_mutually_exclusive_group()
    heads.add_argument(
        "--heads",
        default=None,
        metavar="VISION,TEXT",
        help="attention head counts, for open_clip state dicts, which do not record them (default: 64-dim heads, "
        "with a warning; an open_clip_config.json beside the file is read)",
    )
    heads.add_argument(
        "--open-clip-model",
        default=None,
        metavar="NAME",
        help="take the head counts from this open_clip architecture (e.g. ViT-H-14)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a model already in DST")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip.weights import Heads, convert, heads_from_open_clip_name

    heads = None
    if args.heads:
        heads = Heads.parse(args.heads)
    elif args.open_clip_model:
        heads = heads_from_open_clip_name(args.open_clip_model)
    dst = Path(args.dst)
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst}: exists and is a file; convert writes a folder (config.json + model.safetensors)")
    if not args.force and dst.is_dir() and any((dst / name).exists() for name in (CONFIG_NAME, WEIGHTS_NAME)):
        raise FileExistsError(f"{dst}: already holds a model; pass --force to overwrite it, or choose a new folder")
    model = convert(args.src, args.dst, variant=args.variant, num_frames=args.num_frames, act=args.act, heads=heads)
    print(f"wrote {args.dst}: variant={model.config.variant}, {model.num_params() / 1e6:.2f}M parameters")
    return 0
