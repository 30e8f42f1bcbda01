"""``clipvip convert SRC DST``: any supported checkpoint -> our folder format."""

from __future__ import annotations

import argparse

from clipvip.config import VARIANTS


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipvip.weights import convert

    model = convert(args.src, args.dst, variant=args.variant, num_frames=args.num_frames, act=args.act)
    print(f"wrote {args.dst}: variant={model.config.variant}, {model.num_params() / 1e6:.2f}M parameters")
    return 0
