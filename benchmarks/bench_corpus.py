"""Corpus cutting: clips/s and CPU seconds per clip for stream copy vs re-encode (3 fps, short side 224).

A synthetic 720p H.264 source (30 fps, GOP 2 s, moving textured content; what HD-VILA-100M's 720p YouTube videos
look like to a cutter) is cut into HD-VILA-like clips (spans of 5-20 s, mean ~13 s). Rounds alternate copy and
re-encode over the same spans (interleaved); we report medians and the median of per-round ratios, plus the mean
output size per clip. CPU time (process time) is what the per-1M-clip cost in BENCHMARKS.md is computed from.

    python benchmarks/bench_corpus.py [--seconds 60] [--clips 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from _common import machine_info, write_json

from clipvip.corpus import CutOptions, VideoCutter

OUT = Path(__file__).resolve().parent / "results" / "corpus.json"


def make_source(path: Path, seconds: float, width: int = 1280, height: int = 720, fps: int = 30) -> Path:
    """Streamed to the encoder frame by frame (a 720p minute does not fit in memory as an array)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as o:
        s = o.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23", "g": str(2 * fps), "keyint_min": str(2 * fps)}
        for i in range(int(seconds * fps)):
            shift = (i * 6) % width
            frame = np.roll(texture, shift, axis=1)
            cx, cy = (i * 9) % width, height // 2 + int(200 * np.sin(i / 20))
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 80**2
            frame[mask] = (255, (i * 5) % 255, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    return path


def cut_all(src: Path, spans: list[tuple[float, float]], mode: str) -> tuple[float, float, int, list[str]]:
    """(wall s, CPU s, total bytes, methods) for cutting every span, the source opened once (as the job does)."""
    w0, c0 = time.perf_counter(), time.process_time()
    total, methods = 0, []
    with VideoCutter(src, CutOptions(mode)) as cutter:
        for a, b in spans:
            clip = cutter.cut(a, b)
            total += len(clip.data)
            methods.append(clip.method)
    return time.perf_counter() - w0, time.process_time() - c0, total, methods


FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "videos"


def fixture_sizes() -> dict[str, dict[str, float]]:
    """KB per second of clip, copy vs re-encode, on the real (natural-content, 240p-256p) fixture videos, when the
    shared fixtures are there: the synthetic source's random texture is far harder to compress than real video."""
    out: dict[str, dict[str, float]] = {}
    for name in ("mmaction2_demo.mp4", "decord_flipping_a_pancake.mkv"):
        path = FIXTURES / name
        if not path.is_file():
            continue
        row = {}
        for mode in ("copy", "reencode"):
            with VideoCutter(path, CutOptions(mode)) as cutter:
                clip = cutter.cut(0.0, min(cutter.duration or 10.0, 10.0) - 0.01)
            row[f"{mode}_kb_per_s"] = len(clip.data) / 1e3 / (clip.end - clip.start)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="source length")
    ap.add_argument("--clips", type=int, default=8, help="clips per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--source", default=None, help="reuse (or create) the synthetic source at this path")
    args = ap.parse_args()
    info = machine_info()
    rng = np.random.default_rng(1)
    spans = []
    for _ in range(args.clips):
        length = float(rng.uniform(5, 20))
        start = float(rng.uniform(0, args.seconds - length))
        spans.append((round(start, 3), round(start + length, 3)))
    modes = ("copy", "reencode")
    per: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = Path(args.source) if args.source else Path(tmp) / "src720p.mp4"
        if not src.is_file():
            make_source(src, args.seconds)
        print(
            f"source: {src.stat().st_size / 1e6:.1f} MB, {args.seconds:.0f} s 720p30, made in {time.perf_counter() - t0:.0f} s"
        )
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for m in order:
                wall, cpu, size, methods = cut_all(src, spans, m)
                assert set(methods) == {m}
                per[m].append((wall, cpu, size))
    n = len(spans)
    mean_len = statistics.mean(b - a for a, b in spans)
    res: dict[str, object] = {"machine": info, "clips_per_round": n, "mean_clip_seconds": mean_len, "spans": spans}
    for m in modes:
        walls = [w for w, _, _ in per[m]]
        cpus = [c for _, c, _ in per[m]]
        res[m] = {
            "clips_per_s_median": n / statistics.median(walls),
            "cpu_s_per_clip_median": statistics.median(cpus) / n,
            "mb_per_clip": per[m][0][2] / n / 1e6,
            "wall_s_rounds": walls,
            "cpu_s_rounds": cpus,
        }
    res["real_fixture_sizes"] = fixture_sizes()
    ratios = [rw / cw for (cw, _, _), (rw, _, _) in zip(per["copy"], per["reencode"])]
    res["reencode_over_copy_wall_median_ratio"] = statistics.median(ratios)
    for m in modes:
        cpu = res[m]["cpu_s_per_clip_median"]
        res[m]["core_hours_per_1M_clips"] = cpu * 1e6 / 3600
    write_json(OUT, res)
    print(f"{n} clips/round, mean {mean_len:.1f} s, {args.rounds} interleaved rounds")
    for m in modes:
        r = res[m]
        print(
            f"{m:9s} {r['clips_per_s_median']:7.2f} clips/s  {r['cpu_s_per_clip_median'] * 1000:8.1f} CPU ms/clip  "
            f"{r['mb_per_clip']:.3f} MB/clip  {r['core_hours_per_1M_clips']:.0f} core-hours per 1M clips"
        )
    for name, row in res["real_fixture_sizes"].items():
        print(f"{name}: copy {row['copy_kb_per_s']:.0f} KB/s of clip, re-encode {row['reencode_kb_per_s']:.0f} KB/s")
    print(f"re-encode / copy wall time: {res['reencode_over_copy_wall_median_ratio']:.1f}x (median of rounds)")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
