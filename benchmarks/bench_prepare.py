"""``clipvip prepare`` throughput, and what a prepared set saves ``clipvip eval`` in decoding.

1. Generates N synthetic "raw" videos like MSR-VTT downloads (H.264 320x240 at 30 fps, ``--seconds`` long, one
   keyframe interval of 250 frames as x264 writes by default; moving bars and mild noise so the codec has work):
   ``--distinct`` encoded files, hard-linked to N names (the job still re-encodes each of the N files).
2. Runs the prepare job on them with the MSR-VTT preset's rate (6 fps) and short side 224 (CLIP4Clip's size), with
   ``--workers`` threads, and reports videos/s (wall) and seconds of video re-encoded per second. A second run
   of the same job measures the resume path (everything done: no video touched).
3. Decode time of eval's reader (``RetrievalDataset.__getitem__``: 12 uniform frames, 224x224, CLIP-normalised,
   what ``clipvip eval``'s DataLoader workers run) on raw vs prepared copies of ``--decode-sample`` videos, interleaved
   (raw, prepared, raw, ...) in ``--rounds`` rounds; the speedup is the median over rounds of the per-round ratio.

    python benchmarks/bench_prepare.py [--n 1000] [--seconds 5] [--workers 2] [--out benchmarks/results/prepare.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from _common import machine_info, write_json

from clipvip.data.annotations import Sample
from clipvip.data.datasets import RetrievalDataset
from clipvip.data.prepare import make_job
from clipvip.jobs import run_job
from clipvip.video import probe, write_video


def synth_frames(i: int, n: int, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(i)
    x = np.arange(w)[None, :]
    t = np.arange(n)[:, None, None]
    bars = ((x[None] + 3 * t + 17 * i) // 20 % 2 * 120 + 60).astype(np.uint8)  # [n, 1, w]
    frames = np.broadcast_to(bars[..., None], (n, h, w, 3)).copy()
    frames[..., i % 3] //= 2
    frames += rng.integers(0, 12, (1, h, w, 3), dtype=np.uint8)
    return frames


def generate(raw: Path, n: int, seconds: float, distinct: int, size: tuple[int, int]) -> float:
    """``distinct`` encoded videos, hard-linked (else copied) to ``n`` names: the prepare job re-encodes every
    file on its own, and generating 1,000 distinct H.264 files would take longer than the job measured."""
    t0 = time.perf_counter()
    frames_per_video = int(30 * seconds)
    for i in range(n):
        p = raw / f"video{i}.mp4"
        if p.exists():
            continue
        if i < distinct:
            frames = synth_frames(i, frames_per_video, h=size[1], w=size[0])
            write_video(p, frames, fps=30, options={"crf": "23"})
        else:
            try:
                os.link(raw / f"video{i % distinct}.mp4", p)
            except OSError:
                shutil.copyfile(raw / f"video{i % distinct}.mp4", p)
    return time.perf_counter() - t0


def decode_seconds(root: Path, ids: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds for eval's dataset to produce every item (open, 12 frames, resize, normalise)."""
    ds = RetrievalDataset(
        [Sample(v, ["x"]) for v in ids], root, split="eval", num_frames=12, size=224, template="{root}/{video_id}.mp4"
    )
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(ds)):
        item = ds[i]
        assert "video" in item, item
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--distinct", type=int, default=20, help="distinct source videos (the rest are links to them)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--raw-size", default="320x240", help="WxH of the raw videos (MSR-VTT: 320x240)")
    ap.add_argument("--decode-sample", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/clipvip_bench_prepare"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prepare.json")
    args = ap.parse_args()

    info = machine_info()
    raw, out = args.workdir / "raw", args.workdir / "prepared"
    size = tuple(int(x) for x in args.raw_size.split("x"))
    gen_s = generate(raw, args.n, args.seconds, args.distinct, size)
    job = make_job(raw, out, 6, 224, part_size=64, workers=args.workers)
    s = run_job(job, progress=False)
    written = s.total("written")
    rerun = run_job(job, progress=False)
    job.write_manifest()
    raw_bytes = sum((raw / f"video{i}.mp4").stat().st_size for i in range(args.n))
    out_bytes = sum(p.stat().st_size for p in out.glob("*.mp4"))
    ids = [f"video{i}" for i in np.linspace(0, args.n - 1, min(args.decode_sample, args.n)).astype(int)]
    rounds = []
    for _ in range(args.rounds):
        (r, rc), (p, pc) = decode_seconds(raw, ids), decode_seconds(out, ids)
        rounds.append(
            {"raw_s": r, "prepared_s": p, "raw_cpu_s": rc, "prepared_cpu_s": pc, "ratio": r / p, "cpu_ratio": rc / pc}
        )
    a, b = probe(raw / "video0.mp4"), probe(out / "video0.mp4")
    result = {
        "machine": info,
        "uptime_at_end": machine_info()["uptime_at_start"],
        "videos": args.n,
        "distinct_sources": min(args.distinct, args.n),
        "raw": {"size": [a.width, a.height], "fps": a.fps, "frames": a.num_frames, "seconds": args.seconds},
        "prepared": {"size": [b.width, b.height], "fps": b.fps, "frames": b.num_frames},
        "generate_s": round(gen_s, 1),
        "prepare": {
            "workers": args.workers,
            "written": written,
            "failed": s.total("failed"),
            "wall_s": round(s.seconds, 2),
            "videos_per_s": round(written / s.seconds, 2),
            "video_seconds_per_s": round(written * args.seconds / s.seconds, 1),
            "rerun_wall_s": round(rerun.seconds, 3),
            "rerun_parts_skipped": len(rerun.skipped_done),
            "bytes_raw": raw_bytes,
            "bytes_prepared": out_bytes,
        },
        "eval_decode": {
            "videos": len(ids),
            "rounds": rounds,
            "raw_ms_per_video_median": round(1000 * statistics.median(r["raw_s"] for r in rounds) / len(ids), 2),
            "prepared_ms_per_video_median": round(
                1000 * statistics.median(r["prepared_s"] for r in rounds) / len(ids), 2
            ),
            "raw_cpu_ms_per_video_median": round(
                1000 * statistics.median(r["raw_cpu_s"] for r in rounds) / len(ids), 2
            ),
            "prepared_cpu_ms_per_video_median": round(
                1000 * statistics.median(r["prepared_cpu_s"] for r in rounds) / len(ids), 2
            ),
            "speedup_median_of_round_ratios": round(statistics.median(r["ratio"] for r in rounds), 2),
            "cpu_speedup_median_of_round_ratios": round(statistics.median(r["cpu_ratio"] for r in rounds), 2),
        },
    }
    write_json(args.out, result)
    print(
        f"prepare: {written} videos in {s.seconds:.1f} s = {written / s.seconds:.1f} videos/s ({args.workers} workers); "
        f"eval decode {result['eval_decode']['raw_ms_per_video_median']} ms -> "
        f"{result['eval_decode']['prepared_ms_per_video_median']} ms per video "
        f"(x{result['eval_decode']['speedup_median_of_round_ratios']} wall, "
        f"x{result['eval_decode']['cpu_speedup_median_of_round_ratios']} CPU)"
    )


if __name__ == "__main__":
    main()
