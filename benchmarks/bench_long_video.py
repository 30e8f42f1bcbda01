"""Long videos: ViP-B/16 at T = 8, 16, 32, 64 frames (batch 1, 224 px), time and peak memory per forward.

Proxy-guided attention costs O(T * N * (M + N)) (a patch sees its frame and the proxies), so time and memory should
grow linearly in T; FullAttention (every token sees every token) is O((T * N)^2) in compute, shown for contrast.
Both use the library's fused SDPA kernels, so neither materialises an L x L score matrix (FullAttention's memory
stays linear too; its TIME is what grows quadratically).

Memory: each (variant, T) runs in a fresh subprocess; the kernel's peak-RSS counter (``VmHWM`` in
/proc/self/status) is reset right before the forward (``echo 5 > /proc/self/clear_refs``) and the reported number
is that peak minus the resident size just before the forward: the activations + workspace of one forward, in MiB.
This is process RSS measured by the OS (all allocators), not a PyTorch allocator statistic. Linux only.

Time: the best of ``--repeats`` forwards after one warm-up, in the precision ``--dtype`` (default bf16, the library's
inference default on this CPU), eager (``torch.compile`` would recompile for every T).

    .venv/bin/python benchmarks/bench_long_video.py                      # ViP T=8..64, Full T=8..32 (~5-10 min)
    .venv/bin/python benchmarks/bench_long_video.py --full-max-frames 64 # also FullAttention at T=64 (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import PeakRSS, machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def measure_one(variant: str, frames: int, dtype: str, repeats: int) -> dict:
    """Runs inside the subprocess: build ViP-B/16 (or its FullAttention twin), time and measure one forward."""
    import torch

    import clipvip
    from clipvip.inference import optimize_for_inference

    torch.manual_seed(0)
    cfg = clipvip.ModelConfig(
        vision=clipvip.VisionConfig(patch_size=16), variant=variant, num_frames=frames
    )  # ViP-B/16: 196 patches per frame
    model = optimize_for_inference(clipvip.CLIPViP(cfg), dtype=dtype, compile=False)
    video = torch.randn(1, frames, 3, 224, 224)
    with torch.inference_mode():
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            model.encode_video(video)
            first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.encode_video(video)
            times.append(time.perf_counter() - t0)
    return {
        "variant": variant,
        "frames": frames,
        "tokens": cfg.num_proxies + frames * cfg.vision.num_patches,
        "first_forward_s": first,
        "best_s": min(times) if times else first,
        "times_s": times,
        "peak_activation_mib": mem.extra_mib,
        "rss_before_mib": mem.before_mib,
        "loadavg_1min": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--full-max-frames", type=int, default=32, help="largest T for FullAttention (its time is O(T^2))")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards after the first (memory) forward")
    ap.add_argument("--out", type=Path, default=RESULTS / "long_video.json")
    ap.add_argument("--_child", nargs=2, metavar=("VARIANT", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(measure_one(args._child[0], int(args._child[1]), args.dtype, args.repeats)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))

    load_start = os.getloadavg()
    rows = []
    for T in args.frames:  # ViP and Full side by side at each T
        for variant in ("vip", "fullattn"):
            if variant == "fullattn" and T > args.full_max_frames:
                continue
            cmd = [sys.executable, __file__, "--dtype", args.dtype, "--repeats", str(args.repeats),
                   "--_child", variant, str(T)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"measurement {variant} T={T} failed (exit {proc.returncode})")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{variant:8s} T={T:3d} tokens={row['tokens']:6d} best={row['best_s']:.2f}s "
                f"peak+={row['peak_activation_mib']:.0f} MiB load={row['loadavg_1min']:.2f}",
                file=sys.stderr,
                flush=True,
            )

    def per_frame(variant: str, key: str) -> dict[int, float]:
        return {r["frames"]: r[key] / r["frames"] for r in rows if r["variant"] == variant}

    out = {
        "benchmark": "long_video",
        "setup": {
            "model": "ViP-B/16 (and its FullAttention twin)",
            "batch": 1,
            "image_size": 224,
            "dtype": args.dtype,
            "compile": False,
            "repeats": args.repeats,
            "memory": "peak RSS (VmHWM, reset before the forward) minus RSS before it, fresh process per row",
            "full_attention_capped_at_frames": args.full_max_frames,
        },  # fmt: skip
        "machine": machine_info(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
        "rows": rows,
        "seconds_per_frame": {v: per_frame(v, "best_s") for v in ("vip", "fullattn")},
        "mib_per_frame": {v: per_frame(v, "peak_activation_mib") for v in ("vip", "fullattn")},
    }
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("seconds_per_frame", "mib_per_frame")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
