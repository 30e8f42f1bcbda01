"""``clipvip analyze nmi A.txt B.txt --model M``: the paper's language domain-gap measure (Sec. 3.2, Table 1)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyses of text / video data (domain gap)")
    tasks = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    n = tasks.add_parser(
        "nmi",
        help="NMI between K-means(2) clusters of CLIP text features and the source of each text",
        description="Mix texts of two sources (one per line in each file), embed them with the model's text tower, "
        "cluster into 2 with K-means and report the NMI with the source ids: mean +/- std over random samples. "
        "Near 1: the sources are easy to tell apart (large domain gap); near 0: indistinguishable.",
    )
    n.add_argument("a", type=Path, help="texts of source A, one per line")
    n.add_argument("b", type=Path, help="texts of source B, one per line")
    n.add_argument("--model", required=True, help="checkpoint (any format clipvip.load reads; e.g. plain CLIP)")
    n.add_argument("--n", type=int, default=1000, help="texts sampled per source per trial (paper: 1000)")
    n.add_argument("--repeats", type=int, default=10, help="trials (paper: 10)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--context-length", type=int, default=None)
    n.add_argument("--batch-size", type=int, default=256)
    n.add_argument("--device", default=None, help="e.g. cuda; default: cpu")
    n.add_argument("--plot", type=Path, default=None, help="write a 2-D PCA scatter of the first trial (PNG)")
    n.add_argument("--json", type=Path, default=None, help="write the result as JSON")
    n.set_defaults(func=run_nmi)


def run_nmi(args: argparse.Namespace) -> int:
    import clipvip
    from clipvip.eval import domain_gap_nmi, model_feature_fn, plot_projection, read_texts
    from clipvip.io import atomic_write_json

    texts_a, texts_b = read_texts(args.a), read_texts(args.b)
    model = clipvip.load(args.model)
    if args.device:
        model = model.to(args.device)
    fn = model_feature_fn(model, batch_size=args.batch_size, context_length=args.context_length)
    res = domain_gap_nmi(texts_a, texts_b, fn, n_per_source=args.n, repeats=args.repeats, seed=args.seed)
    print(
        f"NMI {args.a.name} vs {args.b.name}: {res.mean:.4f} +/- {res.std:.4f} "
        f"({res.repeats} trials x {res.n_per_source} texts per source)"
    )
    if args.json:
        out = {"a": str(args.a), "b": str(args.b), "model": str(args.model), **res.to_dict()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.plot:
        plot_projection(res, args.plot, (args.a.stem, args.b.stem))
        print(f"wrote {args.plot}")
    return 0
