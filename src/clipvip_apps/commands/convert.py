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
    p.add_argument("--force", action="store_true", help="overwrite a model already in DST")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip.weights import convert

    dst = Path(args.dst)
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst}: exists and is a file; convert writes a folder (config.json + model.safetensors)")
    if not args.force and dst.is_dir() and any((dst / name).exists() for name in (CONFIG_NAME, WEIGHTS_NAME)):
        raise FileExistsError(f"{dst}: already holds a model; pass --force to overwrite it, or choose a new folder")
    model = convert(args.src, args.dst, variant=args.variant, num_frames=args.num_frames, act=args.act)
    print(f"wrote {args.dst}: variant={model.config.variant}, {model.num_params() / 1e6:.2f}M parameters")
    return 0
