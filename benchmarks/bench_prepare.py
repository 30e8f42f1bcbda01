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

4. ``--scaling-sample K``: instead, videos/s of the job on K videos with 1..``--workers`` threads, interleaved.

    python benchmarks/bench_prepare.py [--n 1000] [--seconds 10] [--workers 2] [--out benchmarks/results/prepare.json]
    python benchmarks/bench_prepare.py --n 40 --scaling-sample 40 --workers 2 --out benchmarks/results/prepare_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
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
    """(wall, CPU) seconds for eval's dataset to produce every item (open, 12 frames, resize, normalise), with one
    torch thread, as in the DataLoader worker processes ``clipvip eval`` decodes in (PyTorch sets 1 there)."""
    torch.set_num_threads(1)
    ds = RetrievalDataset(
        [Sample(v, ["x"]) for v in ids], root, split="eval", num_frames=12, size=224, template="{root}/{video_id}.mp4"
    )
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(ds)):
        item = ds[i]
        assert "video" in item, item
    return time.perf_counter() - t0, time.process_time() - c0


def scaling(raw: Path, workdir: Path, sample: int, rounds: int, max_workers: int) -> dict:
    """videos/s of the prepare job on ``sample`` videos with 1..max_workers threads, interleaved over rounds."""
    srcs = sorted(p.name for p in raw.glob("*.mp4"))[:sample]
    runs: dict[int, list[float]] = {w: [] for w in range(1, max_workers + 1)}
    for r in range(rounds):
        for w in runs:
            out = workdir / f"scaling_r{r}_w{w}"
            shutil.rmtree(out, ignore_errors=True)
            job = make_job(raw, out, 6, 224, sources=srcs, part_size=len(srcs), workers=w)
            s = run_job(job, progress=False)
            runs[w].append(s.total("written") / s.seconds)
            shutil.rmtree(out, ignore_errors=True)
    med = {w: statistics.median(v) for w, v in runs.items()}
    ratios = [runs[max_workers][r] / runs[1][r] for r in range(rounds)]
    return {
        "videos": len(srcs),
        "videos_per_s": {str(w): [round(x, 2) for x in v] for w, v in runs.items()},
        "median_videos_per_s": {str(w): round(v, 2) for w, v in med.items()},
        f"speedup_{max_workers}_vs_1_median_of_round_ratios": round(statistics.median(ratios), 2),
    }


def decode_phase(raw: Path, out: Path, n: int, sample: int, rounds_n: int) -> dict:
    ids = [f"video{i}" for i in np.linspace(0, n - 1, min(sample, n)).astype(int)]
    rounds = []
    for _ in range(rounds_n):
        (r, rc), (p, pc) = decode_seconds(raw, ids), decode_seconds(out, ids)
        rounds.append(
            {"raw_s": r, "prepared_s": p, "raw_cpu_s": rc, "prepared_cpu_s": pc, "ratio": r / p, "cpu_ratio": rc / pc}
        )

    def ms(key: str) -> float:
        return round(1000 * statistics.median(r[key] for r in rounds) / len(ids), 2)

    return {
        "videos": len(ids),
        "torch_threads": 1,
        "rounds": rounds,
        "raw_ms_per_video_median": ms("raw_s"),
        "prepared_ms_per_video_median": ms("prepared_s"),
        "raw_cpu_ms_per_video_median": ms("raw_cpu_s"),
        "prepared_cpu_ms_per_video_median": ms("prepared_cpu_s"),
        "speedup_median_of_round_ratios": round(statistics.median(r["ratio"] for r in rounds), 2),
        "cpu_speedup_median_of_round_ratios": round(statistics.median(r["cpu_ratio"] for r in rounds), 2),
        "uptime_at_start": machine_info()["uptime_at_start"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--distinct", type=int, default=20, help="distinct source videos (the rest are links to them)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--raw-size", default="320x240", help="WxH of the raw videos (MSR-VTT: 320x240)")
    ap.add_argument("--decode-sample", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--scaling-sample", type=int, default=0, help="only measure 1..--workers threads on this many videos"
    )
    ap.add_argument(
        "--decode-only", action="store_true", help="re-measure only step 3 on an existing run, updating --out"
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/clipvip_bench_prepare"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prepare.json")
    args = ap.parse_args()

    info = machine_info()
    raw, out = args.workdir / "raw", args.workdir / "prepared"
    size = tuple(int(x) for x in args.raw_size.split("x"))
    gen_s = generate(raw, args.n, args.seconds, args.distinct, size)
    if args.decode_only:
        result = json.loads(args.out.read_text())
        result["eval_decode"] = decode_phase(raw, out, args.n, args.decode_sample, args.rounds)
        write_json(args.out, result)
        print(result["eval_decode"])
        return
    if args.scaling_sample:
        res = scaling(raw, args.workdir, args.scaling_sample, args.rounds, args.workers)
        write_json(args.out, {"machine": info, "uptime_at_end": machine_info()["uptime_at_start"], **res})
        print(res)
        return
    job = make_job(raw, out, 6, 224, part_size=64, workers=args.workers)
    s = run_job(job, progress=False)
    written = s.total("written")
    rerun = run_job(job, progress=False)
    job.write_manifest()
    raw_bytes = sum((raw / f"video{i}.mp4").stat().st_size for i in range(args.n))
    out_bytes = sum(p.stat().st_size for p in out.glob("*.mp4"))
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
        "eval_decode": decode_phase(raw, out, args.n, args.decode_sample, args.rounds),
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
