"""Training step (forward + backward + AdamW) of CLIP-ViP ViP-B/32, 12 frames, 224 px, batch 8, symmetric InfoNCE.

Configurations (each in a fresh subprocess so its peak memory is its own; rounds interleave all configurations):

- ``released``: the released eager attention (``bench_encoder.ReleasedAttention``: separate q/k/v, proxy keys
  repeated per frame, manual bmm/softmax) plugged into the same weights; fp32.
- ``ours``: the library model, fp32.
- ``ours_ckpt``: + ``model.set_grad_checkpointing(True)`` (activations recomputed in backward).
- ``ours_gradcache``: ``clipvip.gradcache.GradCache`` with chunks of ``--chunk`` samples (exact full-batch
  gradient; activations of one chunk only; one extra forward).
- ``released_bf16`` / ``ours_bf16``: the same two models under CPU bf16 autocast (mixed precision), for reference.

Speed: samples/s of one step, after ``--warmup`` untimed steps (default 0: on this shared 2-core machine one fp32
step takes minutes; the lazy one-off work of a first step, AdamW state and oneDNN primitives, is small next to it).
Memory: process RSS measured by the OS. ``rss_before_mib`` = resident size before the timed step (weights, AdamW
state once a step ran, libraries); ``peak_mib`` = peak RSS during the timed step (``VmHWM`` reset right before it
through /proc/self/clear_refs); ``step_extra_mib`` = the difference (activations, gradients, workspace). Linux only.

    .venv/bin/python benchmarks/bench_train_step.py                # 4 fp32 configs, ~5 min on an idle 2-core CPU
    .venv/bin/python benchmarks/bench_train_step.py --configs released_bf16 ours_bf16 --warmup 1
    .venv/bin/python benchmarks/bench_train_step.py --configs released ours --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import PeakRSS, machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = ("released", "ours", "ours_ckpt", "ours_gradcache", "released_bf16", "ours_bf16")
DEFAULT_CONFIGS = ("released", "ours", "ours_ckpt", "ours_gradcache")


def measure_one(name: str, batch: int, frames: int, chunk: int, warmup: int) -> dict:
    """Runs inside the subprocess: ``warmup`` steps, then one measured step."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_encoder import released_reference

    import clipvip
    from clipvip.gradcache import GradCache
    from clipvip.losses import info_nce

    torch.manual_seed(0)
    model = clipvip.CLIPViP(clipvip.ModelConfig(num_frames=frames)).train()
    if name.startswith("released"):
        model = released_reference(model).train()
    model.set_grad_checkpointing(name == "ours_ckpt")
    if name.startswith("released"):  # the release: torch's default AdamW (a per-parameter loop on CPU)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.2)
    else:  # ours: the trainer's optimizer (fused AdamW, clipvip_apps.train.optim.adamw)
        from clipvip_apps.train.optim import adamw, param_groups

        opt = adamw(param_groups(model, 0.2), 1e-6, (0.9, 0.999), 1e-8, torch.device("cpu"))
    video = torch.randn(batch, frames, 3, 224, 224)
    # captions padded to the paper's 70-token text length (the release runs the text tower on all 70 positions;
    # ours cuts each batch after its longest caption, which is exact)
    text = clipvip.tokenize([f"a video of thing number {i} doing something" for i in range(batch)], 70)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if name.endswith("bf16") else contextlib.nullcontext

    def loss_fn(e: dict) -> torch.Tensor:
        return info_nce(e["video"], e["text"], model.logit_scale)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with amp():
            if name == "ours_gradcache":
                loss = GradCache(chunk).step(
                    {"video": model.encode_video, "text": model.encode_text}, {"video": video, "text": text}, loss_fn
                )
            else:
                loss = loss_fn({"video": model.encode_video(video), "text": model.encode_text(text)})
                loss.backward()
        opt.step()
        return float(loss)

    t0 = time.perf_counter()
    losses = [step() for _ in range(warmup)]
    warm = time.perf_counter() - t0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        losses.append(step())
        dt = time.perf_counter() - t0
    return {
        "config": name,
        "samples_per_s": batch / dt,
        "step_s": dt,
        "warmup_steps": warmup,
        "warmup_s": warm,
        "rss_before_mib": mem.before_mib,
        "peak_mib": mem.peak_mib,
        "step_extra_mib": mem.extra_mib,
        "losses": losses,
        "loadavg_1min": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--chunk", type=int, default=2, help="GradCache chunk size")
    ap.add_argument(
        "--warmup", type=int, default=0, help="untimed steps first (0: the measured step also creates AdamW state)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (one subprocess per config per round)")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_step.json")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(measure_one(args._child, args.batch, args.frames, args.chunk, args.warmup)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))

    load_start = os.getloadavg()
    runs: list[dict] = []
    for r in range(args.rounds):
        for name in args.configs:
            cmd = [sys.executable, __file__, "--batch", str(args.batch), "--frames", str(args.frames),
                   "--chunk", str(args.chunk), "--warmup", str(args.warmup), "--_child", name]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"configuration {name} failed (exit {proc.returncode})")
            row = json.loads(proc.stdout.strip().splitlines()[-1]) | {"round": r}
            runs.append(row)
            print(
                f"round {r} {name:15s} {row['samples_per_s']:.3f} samples/s peak {row['peak_mib']:.0f} MiB "
                f"(+{row['step_extra_mib']:.0f}) load {row['loadavg_1min']:.2f}",
                file=sys.stderr,
                flush=True,
            )

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in runs if x["config"] == name)

    summary = {
        n: {k: med(n, k) for k in ("samples_per_s", "peak_mib", "step_extra_mib", "rss_before_mib")}
        for n in args.configs
    }
    vs_released = {}
    for n in args.configs:
        ref = "released_bf16" if n.endswith("bf16") else "released"
        if ref in summary and n != ref:
            vs_released[n] = {
                "reference": ref,
                "speed_ratio": summary[n]["samples_per_s"] / summary[ref]["samples_per_s"],
                "peak_memory_ratio": summary[n]["peak_mib"] / summary[ref]["peak_mib"],
                "step_extra_memory_ratio": summary[n]["step_extra_mib"] / summary[ref]["step_extra_mib"],
                "goal_speed>=1.1x": summary[n]["samples_per_s"] / summary[ref]["samples_per_s"] >= 1.1,
                "goal_peak_memory<=0.8x": summary[n]["peak_mib"] / summary[ref]["peak_mib"] <= 0.8,
            }
    out = {
        "benchmark": "train_step",
        "setup": {
            "model": "CLIP-ViP ViP-B/32 + CLIP text tower",
            "batch": args.batch,
            "frames": args.frames,
            "image_size": 224,
            "loss": "symmetric InfoNCE",
            "optimizer": "AdamW",
            "gradcache_chunk": args.chunk,
            "rounds": args.rounds,
            "memory": "process RSS (VmHWM reset before the timed step), fresh process per run",
        },  # fmt: skip
        "machine": machine_info(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
        "summary_median": summary,
        "vs_released": vs_released,
        "runs": runs,
    }
    write_json(args.out, out)
    print(json.dumps({"summary_median": summary, "vs_released": vs_released}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
