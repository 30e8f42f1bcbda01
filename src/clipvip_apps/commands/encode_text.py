"""``clipvip encode-text "..." --model M --out text.npy``."""

from __future__ import annotations

import argparse

import numpy as np
import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode-text", help="encode texts to L2-normalised embeddings (.npy)")
    p.add_argument("texts", nargs="+")
    p.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads)")
    p.add_argument("--context-length", type=int, default=77)
    p.add_argument("--out", default="text_embeddings.npy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import clipvip

    model = clipvip.load(args.model)
    with torch.inference_mode():
        emb = model.encode_text(args.texts, context_length=args.context_length)
    np.save(args.out, emb.numpy())
    print(f"wrote {args.out}: {tuple(emb.shape)}")
    return 0
