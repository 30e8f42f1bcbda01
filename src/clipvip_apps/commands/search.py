"""``clipvip search INDEX "a dog catches a frisbee" -k 10 [--json]``: ranked videos (and matched window times)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an index built by `clipvip index` with a text query")
    p.add_argument("index", help="index folder")
    p.add_argument("query", help="text query")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--model", default=None, help="model (default: the one recorded in the index)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--all-windows", action="store_true", help="list every matching window, not one per video")
    p.set_defaults(func=run)


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "?"
    m, s = divmod(t, 60)
    return f"{int(m)}:{s:04.1f}"


def run(args: argparse.Namespace) -> int:
    import torch

    from clipvip.index import VideoIndex, load_index_model

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    if not args.query.strip():
        raise ValueError("empty query")
    index = VideoIndex.open(args.index)
    model = load_index_model(index, args.model)
    with torch.inference_mode():
        q = model.encode_text([args.query])[0].numpy()
    hits = index.search(q, args.k, per_video=not args.all_windows)
    if args.json:
        print(
            json.dumps(
                {"query": args.query, "index": str(index.root), "results": [h.to_dict() for h in hits]}, indent=2
            )
        )
        return 0
    for h in hits:
        windowed = index.meta["settings"]["window"] is not None
        when = f"  [{_fmt_time(h.start)}-{_fmt_time(h.end)}]" if windowed else ""
        print(f"{h.rank:3d}  {h.score:.4f}  {h.path}{when}")
    if not hits:
        print("(index is empty)")
    return 0
