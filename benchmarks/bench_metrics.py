"""Retrieval-metric benchmark: ``clipvip.eval.retrieval_metrics`` beside the release's full-sort ``compute_metrics``.

The release (CLIP4Clip / CLIP-ViP) sorts every row of the full matrix and locates the target with ``np.where``: a
full Q x N sort plus several Q x N float temporaries. Ours counts, chunk by chunk over queries, the scores that beat
the target: O(Q N) comparisons and one small boolean buffer.

Each method runs in its own child process so its memory is measured alone: "beyond matrix" = peak RSS (VmHWM) minus
RSS once the random float32 matrix exists. Time = best of ``--repeats`` runs (median also recorded). The matrix is
Gaussian noise with a boosted diagonal; cost does not depend on the content. At 20,000 x 20,000 some float32 scores
collide with a query's target, which the release counts more than once (its "entries" exceed the query count).

    .venv/bin/python benchmarks/bench_metrics.py                 # 20,000 x 20,000 (needs ~8 GB free for the release's)
    .venv/bin/python benchmarks/bench_metrics.py --n 5000        # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "bench_metrics.json"


def release_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """The release's compute_metrics, reimplemented verbatim in behaviour (full sort + np.where)."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)
    d = d[:, np.newaxis]
    ind = sx - d
    ind = np.where(ind == 0)
    ind = ind[1]
    return {
        "R@1": float(np.sum(ind == 0)) * 100 / len(ind),
        "R@5": float(np.sum(ind < 5)) * 100 / len(ind),
        "R@10": float(np.sum(ind < 10)) * 100 / len(ind),
        "MdR": float(np.median(ind) + 1),
        "MnR": float(np.mean(ind) + 1),
        "entries": int(len(ind)),  # > number of queries when a query's target is tied with another score
    }


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(method: str, n: int, repeats: int, seed: int) -> dict:
    # import first (torch alone is ~0.5 GB of RSS) so that the baseline below holds code + matrix for every method
    import torch

    from clipvip.eval import invert_mapping, retrieval_metrics, retrieval_ranks, retrieval_ranks_from_embeddings

    rng = np.random.default_rng(seed)
    if method == "ours_stream_embeddings":  # no matrix at all: 512-d unit embeddings, queries = noisy items
        items = rng.standard_normal((n, 512), dtype=np.float32)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        queries = items + 0.1 * rng.standard_normal((n, 512), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        x = np.empty((0, 0), dtype=np.float32)
        qt, it = torch.from_numpy(queries), torch.from_numpy(items)
    else:
        x = rng.standard_normal((n, n), dtype=np.float32)
        x[np.arange(n), np.arange(n)] += 3.0
    base = _rss_kb("VmRSS")
    if method == "ours_stream_embeddings":
        fn = lambda: retrieval_ranks_from_embeddings(qt, it, chunk_size=1024)  # noqa: E731
    elif method == "release":
        fn = lambda: release_compute_metrics(x)  # noqa: E731
    else:
        if method == "ours":
            fn = lambda: retrieval_metrics(x)  # noqa: E731
        elif method == "ours_mean_ties":
            fn = lambda: retrieval_metrics(x, ties="mean")  # noqa: E731
        elif method == "ours_v2t_transposed":  # video->text reads the matrix column-wise (strided)
            pos = invert_mapping(np.arange(n), n)
            fn = lambda: retrieval_ranks(x.T, positives=pos)  # noqa: E731
        else:
            raise ValueError(method)
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    peak = _rss_kb("VmHWM")
    metrics = out if isinstance(out, dict) else {"MnR": float(np.mean(out))}
    return {
        "method": method,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "beyond_matrix_gb": (peak - base) / 1e6 * 1.024,
        "matrix_gb": x.nbytes / 1e9,  # 0 for the streaming method: there "beyond matrix" = beyond embeddings
        "metrics": metrics,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--release-repeats", type=int, default=1, help="the release's method is slow; 1 run by default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="ours,ours_mean_ties,ours_v2t_transposed,ours_stream_embeddings,release")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        reps = args.release_repeats if args.worker == "release" else args.repeats
        print(json.dumps(worker(args.worker, args.n, reps, args.seed)))
        return 0
    rows = []
    for method in args.methods.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--n",
            str(args.n),
            "--seed",
            str(args.seed),
            "--repeats",
            str(args.repeats),
            "--release-repeats",
            str(args.release_repeats),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{method:22s} best {row['best_s']:.3f} s  median {row['median_s']:.3f} s  "
            f"beyond matrix {row['beyond_matrix_gb']:.3f} GB  {row['metrics']}"
        )
    by = {r["method"]: r for r in rows}
    if "ours" in by and "release" in by:
        entries = by["release"]["metrics"]["entries"]
        if entries == args.n:  # no ties anywhere: both methods must agree exactly
            for k in ("R@1", "R@5", "R@10", "MdR", "MnR"):
                assert abs(by["ours"]["metrics"][k] - by["release"]["metrics"][k]) < 1e-6, k
        else:
            print(f"release counted {entries} entries for {args.n} queries (float32 ties double-counted)")
        print(f"speed-up vs release: {by['release']['best_s'] / by['ours']['best_s']:.1f}x")
    result = {
        "n": args.n,
        "dtype": "float32",
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_avg_1min": os.getloadavg()[0],
        },
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
