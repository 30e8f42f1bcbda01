"""Shared ``--precision/--compile/--no-optimize`` flags for the commands that encode many videos."""

from __future__ import annotations

import argparse

from clipvip import CLIPViP, optimize_for_inference


def add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="encoder precision (auto: bf16 where the CPU/GPU has fast bf16, else fp32)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the towers (pays off on long jobs)")
    p.add_argument("--no-optimize", action="store_true", help="run the model exactly as loaded (fp32, eager)")


def prepare_for_inference(model: CLIPViP, args: argparse.Namespace) -> CLIPViP:
    """``clipvip.optimize_for_inference`` unless ``--no-optimize``; embeddings stay fp32 and L2-normalised."""
    if args.no_optimize:
        return model.eval()
    return optimize_for_inference(model, dtype=args.precision, compile=args.compile)
