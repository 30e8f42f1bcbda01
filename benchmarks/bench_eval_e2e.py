"""End-to-end ``clipvip eval``: wall time of the real command on N generated videos, split into its stages.

What is measured (issue #8, "End to end"):

- **The real command.** ``clipvip eval --preset msrvtt-1ka`` is run in a fresh Python process (this script re-invoked
  with ``--_cli-child``, which calls ``clipvip_apps.cli.main`` with the argv below), with the CLI's defaults
  (``optimize_for_inference``, precision auto = bf16 where fast, embedding cache on but empty, DSL rows on) except
  ``--num-workers``. The parent times the whole process (interpreter start and imports included). Inside, thin
  timing wrappers around the functions the command calls give the split: model load, ``optimize_for_inference``,
  dataset (annotation + file checks), fingerprints (embedding-cache keys), text embedding, the video loop (decoding
  in DataLoader workers overlapped with encoding), metrics (``score_retrieval``), cache write. ``encode_video`` is
  also timed on its own inside the video loop, so ``video loop - encode`` is the time the loop waited for decoded
  batches: near 0 means decoding was hidden behind encoding.
- **Decode only**: the command's own dataset (``build_dataset``) through the same DataLoader (batch 16,
  ``clipvip.data.collate``) with 0 and with ``--workers`` workers, no model.
- **Encode only**: the command's model (``clipvip.load`` + ``prepare_for_inference`` with the CLI defaults) on
  pre-decoded batches of 16 (one warm-up batch, then ``--encode-n`` videos timed).
- **Overlap**: the command again on the first ``--overlap-n`` videos with each of ``--overlap-workers`` (default
  0, 1, 2), to compare the serial sum (0 workers) with the overlapped runs per video, like for like. And a second
  run of the main command (embedding cache hit).
- **Text only**: ``embed_texts`` as shipped (texts batched by length, padding trimmed) against the former loop that
  padded every caption to the preset's 70 tokens, same model and captions.

``--stages`` re-runs a subset (cli, decode, encode, text) and updates only those entries of an existing JSON (each
stage keeps the machine / load it was measured under in "stage_machine"; replaced CLI runs move to
"previous_runs"), e.g. to measure a change to one stage without re-running the whole benchmark.

Data: N synthetic clips (``clipvip.synth``: 1-2 shapes moving / growing / changing colour on a textured
background, a slow vertical pan), 4 s at 24 fps, 320x240 H.264 (libx264 crf 23, x264 default GOP), one caption each
from ``clipvip.synth.text.caption``, in the MSR-VTT 1k-A csv layout; generated once into ``--work-dir`` and reused.
Model: a randomly initialised ViP-B/32 (12 frames, 224 px) saved with ``save_pretrained`` (no download needed; the
speed does not depend on the weights). Recall numbers of a random model are meaningless and are not reported.

    .venv/bin/python benchmarks/bench_eval_e2e.py                # N = 1000 (~20-30 min on the 2-core CPU box)
    .venv/bin/python benchmarks/bench_eval_e2e.py --quick        # N = 40, writes into --work-dir, not results/
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"
PRESET = "msrvtt-1ka"
BATCH = 16  # the CLI's default --batch-size
WIDTH, HEIGHT, SECONDS, FPS, KEYFRAMES = 320, 240, 4.0, 24, 8
GFLOP_PER_VIDEO = 103.3  # ViP-B/32, 12 frames, 224 px (bench_encoder.py, FlopCounterMode)


def default_work_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipvip-bench" / "e2e"


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------------------------------------------
# Data and model (generated once, reused)
# ----------------------------------------------------------------------------------------------------------------
def clip_frames(i: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """uint8 [T, 240, 320, 3] and a caption for video ``i``: distinct content per index, deterministic.

    ``render_clip`` is ~25 ms per 320 px frame, so 8 states are rendered and the 96 frames cross-fade between
    them, while a 320x240 window pans over the 320x320 scene (real motion for the codec, not repeated frames)."""
    from clipvip.synth.scene import MOTIONS, render_clip, sample_clip
    from clipvip.synth.text import caption

    rng = np.random.default_rng([seed, i])
    spec = sample_clip(rng, f"video{i}", MOTIONS[i % len(MOTIONS)])
    keys = render_clip(spec, KEYFRAMES, WIDTH).astype(np.float32)  # [K, 320, 320, 3]
    n = round(SECONDS * FPS)
    y0, y1 = (int(v) for v in rng.integers(0, WIDTH - HEIGHT + 1, size=2))
    out = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(n):
        pos = t * (KEYFRAMES - 1) / (n - 1)
        lo = min(int(pos), KEYFRAMES - 2)
        w = pos - lo
        y = round(y0 + (y1 - y0) * t / (n - 1))
        frame = keys[lo, y : y + HEIGHT] * (1 - w) + keys[lo + 1, y : y + HEIGHT] * w
        out[t] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out, caption(spec, template=i % 3)


def ensure_videos(work_dir: Path, n: int, progress: bool = True) -> tuple[Path, list[str], float]:
    """Videos ``video0..video{n-1}.mp4`` under ``work_dir/videos`` (missing ones generated) and their captions;
    returns (video root, captions, seconds spent generating)."""
    from clipvip.video.write import write_video

    root = work_dir / "videos"
    root.mkdir(parents=True, exist_ok=True)
    captions_file = work_dir / "captions.json"
    captions: dict[str, str] = json.loads(captions_file.read_text()) if captions_file.exists() else {}
    t0 = time.perf_counter()
    made = 0
    for i in range(n):
        path = root / f"video{i}.mp4"
        if path.exists() and str(i) in captions:
            continue
        frames, text = clip_frames(i)
        write_video(path, frames, fps=FPS, options={"crf": "23"})
        captions[str(i)] = text
        made += 1
        if made % 50 == 0:
            captions_file.write_text(json.dumps(captions))
            if progress:
                print(f"  generated {made} videos ({i + 1}/{n})", flush=True)
    if made:
        captions_file.write_text(json.dumps(captions))
    return root, [captions[str(i)] for i in range(n)], time.perf_counter() - t0


def write_annotation(work_dir: Path, captions: list[str]) -> Path:
    """MSR-VTT 1k-A csv (``key,vid_key,video_id,sentence``) for the first ``len(captions)`` videos."""
    path = work_dir / f"msrvtt_1ka_n{len(captions)}.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, text in enumerate(captions):
            w.writerow([f"ret{i}", f"msr{i}", f"video{i}", text])
    return path


def ensure_model(work_dir: Path) -> Path:
    """A randomly initialised ViP-B/32 (12 frames, 224 px) saved with ``save_pretrained``, fp32."""
    import torch

    import clipvip

    d = work_dir / "vip-b32-random"
    if not (d / "config.json").exists():
        torch.manual_seed(0)
        clipvip.CLIPViP(clipvip.ModelConfig(num_frames=12)).save_pretrained(d)
    return d


def cli_argv(model: Path, annotation: Path, video_root: Path, out: Path, cache: Path, workers: int) -> list[str]:
    return [
        "eval",
        "--model", str(model),
        "--preset", PRESET,
        "--annotation", str(annotation),
        "--video-root", str(video_root),
        "--num-workers", str(workers),
        "--cache-dir", str(cache),
        "--out", str(out),
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The instrumented command (runs in a child process)
# ----------------------------------------------------------------------------------------------------------------
def cli_child(argv: list[str], timings_path: Path) -> int:
    """Run ``clipvip_apps.cli.main(argv)`` with timing wrappers; write the per-stage seconds as JSON."""
    t_start = time.perf_counter()
    import torch

    import clipvip
    import clipvip.eval.retrieval as retrieval
    import clipvip_apps.commands.eval as eval_cmd
    from clipvip_apps import cli

    t_imports = time.perf_counter() - t_start
    stages: dict[str, float] = {}
    calls: dict[str, int] = {}
    info: dict[str, Any] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
                calls[name] = calls.get(name, 0) + 1

        return wrapper

    prepare = eval_cmd.prepare_for_inference

    def prepare_and_instrument(model: Any, args: Any) -> Any:
        model = timed("optimize_for_inference", prepare)(model, args)
        info["dtype"] = str(next(model.visual.parameters()).dtype)  # not logit_scale, which stays fp32
        info["device"] = str(next(model.visual.parameters()).device)
        info["torch_threads"] = torch.get_num_threads()
        model.encode_video = timed("encode_video_calls", model.encode_video)  # instance attribute: this model only
        model.encode_text = timed("encode_text_calls", model.encode_text)
        return model

    clipvip.load = timed("load_model", clipvip.load)
    eval_cmd.prepare_for_inference = prepare_and_instrument
    eval_cmd.build_dataset = timed("dataset", eval_cmd.build_dataset)
    retrieval.model_fingerprint = timed("fingerprints", retrieval.model_fingerprint)
    retrieval.data_fingerprint = timed("fingerprints", retrieval.data_fingerprint)
    retrieval.embed_texts = timed("text_embedding", retrieval.embed_texts)
    retrieval.embed_videos = timed("video_loop", retrieval.embed_videos)
    retrieval.score_retrieval = timed("metrics", retrieval.score_retrieval)
    retrieval.EmbeddingCache.save = timed("cache_write", retrieval.EmbeddingCache.save)
    retrieval.EmbeddingCache.load = timed("cache_read", retrieval.EmbeddingCache.load)
    t = time.perf_counter()
    rc = cli.main(argv)
    main_s = time.perf_counter() - t
    out = {
        "rc": rc,
        "imports_s": t_imports,
        "main_s": main_s,
        "stages_s": stages,
        "calls": calls,
        **info,
    }
    timings_path.write_text(json.dumps(out, indent=2))
    return rc


def run_cli(argv: list[str], label: str) -> dict[str, Any]:
    """The command in a fresh process; returns its wall time (whole process) and the child's stage timings."""
    timings = Path(argv[argv.index("--out") + 1]) / "stage_timings.json"
    timings.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_cli-child", str(timings), "--", *argv]
    load_before = load_now()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"{label}: clipvip eval exited with {proc.returncode}")
    res = json.loads(timings.read_text())
    res["process_wall_s"] = wall
    res["loadavg_before"], res["loadavg_after"] = load_before, load_now()
    res["argv"] = ["clipvip", *argv]
    res["results_json"] = json.loads((timings.parent / "results.json").read_text()).get("counts")
    st = res["stages_s"]
    if "video_loop" in st and "encode_video_calls" in st:
        st["video_loop_waiting_for_data"] = st["video_loop"] - st["encode_video_calls"]
    known = ("load_model", "optimize_for_inference", "dataset", "fingerprints", "text_embedding", "video_loop")
    known += ("metrics", "cache_write", "cache_read")
    res["other_in_main_s"] = res["main_s"] - sum(st.get(k, 0.0) for k in known)
    res["startup_s"] = wall - res["main_s"]  # interpreter + imports + argparse outside main()
    return res


# ----------------------------------------------------------------------------------------------------------------
# Decode only / encode only
# ----------------------------------------------------------------------------------------------------------------
def cli_args(argv: list[str]) -> argparse.Namespace:
    from clipvip_apps.cli import build_parser

    return build_parser().parse_args(argv)


def decode_only(argv: list[str], workers: int) -> dict[str, Any]:
    """The command's dataset through the same DataLoader (batch 16, ``clipvip.data.collate``), no model."""
    from torch.utils.data import DataLoader

    from clipvip.data import collate
    from clipvip.eval.presets import get_preset
    from clipvip_apps.commands.eval import build_dataset

    ds = build_dataset(cli_args(argv), get_preset(PRESET), 224)
    load_before = load_now()
    t = time.perf_counter()
    loader = DataLoader(ds, batch_size=BATCH, shuffle=False, num_workers=workers, collate_fn=collate)
    n = skipped = 0
    for batch in loader:
        n += int(batch["video"].shape[0]) if "video" in batch else 0
        skipped += len(batch["skipped"])
    s = time.perf_counter() - t
    return {
        "workers": workers,
        "videos": n,
        "skipped": skipped,
        "seconds": s,
        "videos_per_s": n / s,
        "s_per_video": s / n,
        "loadavg_before": load_before,
        "loadavg_after": load_now(),
    }


def encode_only(argv: list[str], n: int) -> dict[str, Any]:
    """The command's model (same load + ``prepare_for_inference``) on pre-decoded batches of 16."""
    import torch

    import clipvip
    from clipvip.eval.presets import get_preset
    from clipvip_apps.commands._inference import prepare_for_inference
    from clipvip_apps.commands.eval import build_dataset

    args = cli_args(argv)
    model = prepare_for_inference(clipvip.load(args.model), args)
    ds = build_dataset(args, get_preset(PRESET), model.config.vision.image_size)
    total = min(len(ds), n + BATCH)
    videos = torch.stack([ds[i]["video"] for i in range(total)])
    batches = list(videos.split(BATCH))
    with torch.inference_mode():
        t = time.perf_counter()
        model.encode_video(batches[0])  # warm-up (oneDNN primitive creation)
        warmup = time.perf_counter() - t
        timed_batches = batches[1:] or batches
        load_before = load_now()
        per_batch = []
        for b in timed_batches:
            t = time.perf_counter()
            model.encode_video(b)
            per_batch.append(time.perf_counter() - t)
    count = sum(len(b) for b in timed_batches)
    s = sum(per_batch)
    return {
        "videos": count,
        "batch": BATCH,
        "dtype": str(next(model.visual.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "warmup_batch_s": warmup,
        "per_batch_s": per_batch,
        "seconds": s,
        "videos_per_s": count / s,
        "s_per_video": s / count,
        "gflop_per_s": GFLOP_PER_VIDEO * count / s,
        "loadavg_before": load_before,
        "loadavg_after": load_now(),
    }


# ----------------------------------------------------------------------------------------------------------------
def per_video(res: dict[str, Any], n: int) -> dict[str, float]:
    st = res["stages_s"]
    return {k: st[k] / n for k in ("video_loop", "encode_video_calls", "video_loop_waiting_for_data") if k in st}


def text_only(argv: list[str]) -> dict[str, Any]:
    """``embed_texts`` (as shipped: texts batched by length, the text tower cutting each batch after its longest
    text) vs the pre-fix path that ran every caption through the preset's 70 positions, on the command's captions
    with the command's model; new, old, new."""
    import torch

    import clipvip
    from clipvip.eval.embed import embed_texts
    from clipvip.eval.presets import get_preset
    from clipvip_apps.commands._inference import prepare_for_inference
    from clipvip_apps.commands.eval import build_dataset

    args = cli_args(argv)
    preset = get_preset(PRESET)
    model = prepare_for_inference(clipvip.load(args.model), args)
    texts = list(build_dataset(args, preset, model.config.vision.image_size).texts)
    ctx, bs = preset.context_length, args.text_batch_size

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_encoder import full_context_text

    from clipvip.tokenizer import tokenize

    def padded() -> torch.Tensor:  # the pre-fix path: every caption through all ``ctx`` positions
        with torch.inference_mode():
            return torch.cat(
                [
                    full_context_text(model.text, tokenize(texts[a : a + bs], ctx)).float()
                    for a in range(0, len(texts), bs)
                ]
            )

    def trimmed() -> torch.Tensor:
        return embed_texts(model, texts, bs, ctx, progress=False)

    with torch.inference_mode():
        model.encode_text(texts[:8], context_length=ctx)  # warm-up
    times: dict[str, list[float]] = {"trimmed": [], "padded_to_context": []}
    out: dict[str, torch.Tensor] = {}
    load_before = load_now()
    for name, fn in (("trimmed", trimmed), ("padded_to_context", padded), ("trimmed", trimmed)):
        t = time.perf_counter()
        out[name] = fn()
        times[name].append(time.perf_counter() - t)
    lengths = tokenize(texts, ctx).argmax(dim=-1) + 1
    best_new, best_old = min(times["trimmed"]), min(times["padded_to_context"])
    return {
        "texts": len(texts),
        "text_batch_size": bs,
        "context_length": ctx,
        "tokens_mean": float(lengths.float().mean()),
        "tokens_max": int(lengths.max()),
        "seconds": times,
        "s_per_text_trimmed": best_new / len(texts),
        "s_per_text_padded": best_old / len(texts),
        "speedup": best_old / best_new,
        "min_cosine_trimmed_vs_padded": float((out["trimmed"] * out["padded_to_context"]).sum(-1).min()),
        "loadavg_before": load_before,
        "loadavg_after": load_now(),
    }


STAGES = ("cli", "decode", "encode", "text")


def analyse(r: dict[str, Any]) -> dict[str, Any]:
    """Per-video split and the overlap evidence from whatever stages the result holds."""
    setup, runs = r["setup"], r.get("runs", {})
    n, w, on = setup["n"], setup["main_workers"], setup["overlap_n"]
    dec, enc = r.get("decode_only", {}), r.get("encode_only")
    spv: dict[str, float | None] = {}
    if dec:
        spv["decode_1_process (workers 0)"] = dec["workers_0"]["s_per_video"]
        spv[f"decode_workers_{w}"] = dec[f"workers_{w}"]["s_per_video"]
    if enc:
        spv["encode_only"] = enc["s_per_video"]
    if dec and enc:
        spv["serial_sum decode(w0)+encode"] = spv["decode_1_process (workers 0)"] + enc["s_per_video"]
        spv["overlapped_bound max(decode(w), encode)"] = max(spv[f"decode_workers_{w}"], enc["s_per_video"])
    labels = (
        ("video_loop", "video loop"),
        ("encode_video_calls", "encode_video inside the loop"),
        ("video_loop_waiting_for_data", "loop waiting for data"),
    )
    for name, run in runs.items():
        if name == "cached_rerun":
            continue
        count = n if name == "main" else on
        pv = per_video(run, count)
        spv.update({f"{name} (n={count}): {label}": pv.get(key) for key, label in labels})
    out: dict[str, Any] = {"s_per_video": spv}
    if "main" in runs:
        wall = runs["main"]["process_wall_s"]
        out["share_of_main_wall"] = {k: v / wall for k, v in runs["main"]["stages_s"].items()}
        out["share_of_main_wall"]["startup (interpreter + imports)"] = runs["main"]["startup_s"] / wall
    if dec and enc:
        out["bound_here"] = "encode" if enc["s_per_video"] > dec[f"workers_{w}"]["s_per_video"] else "decode"
        out["encode_over_decode_1_core"] = enc["s_per_video"] / dec["workers_0"]["s_per_video"]
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--_cli-child":
        return cli_child(sys.argv[sys.argv.index("--") + 1 :], Path(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="videos in the eval set")
    ap.add_argument("--quick", action="store_true", help="n=40, small overlap / encode samples, output in work dir")
    ap.add_argument("--work-dir", type=Path, default=default_work_dir(), help="generated videos + model (reused)")
    ap.add_argument("--workers", type=int, default=2, help="--num-workers of the main run (this box: 2 cores)")
    ap.add_argument("--overlap-n", type=int, default=100, help="videos in the runs with --overlap-workers")
    ap.add_argument("--overlap-workers", default="0,1,2", help="--num-workers values compared on --overlap-n videos")
    ap.add_argument("--encode-n", type=int, default=48, help="videos timed in the encode-only stage")
    ap.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"subset of {','.join(STAGES)}; a subset updates only those entries of an existing --out JSON",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: results/eval_e2e.json; quick: work dir)")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        ap.error(f"unknown stages {sorted(unknown)}")
    if args.quick:
        args.n, args.overlap_n, args.encode_n = min(args.n, 40), min(args.overlap_n, 32), min(args.encode_n, 16)
    args.overlap_n = min(args.overlap_n, args.n)
    out_json = args.out or (args.work_dir / "eval_e2e_quick.json" if args.quick else RESULTS / "eval_e2e.json")
    work = args.work_dir
    machine = machine_info()
    print(f"work dir {work}; {machine['uptime_at_start']}", flush=True)

    video_root, captions, gen_s = ensure_videos(work, args.n)
    sizes = [(video_root / f"video{i}.mp4").stat().st_size for i in range(args.n)]
    model_dir = ensure_model(work)
    ann = write_annotation(work, captions)
    ann_overlap = write_annotation(work, captions[: args.overlap_n])
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a fresh (empty) embedding cache for every invocation of the script

    def argv(annotation: Path, name: str, workers: int, cache: str) -> list[str]:
        return cli_argv(model_dir, annotation, video_root, runs / name, runs / cache, workers)

    setup = {
        "n": args.n,
        "quick": args.quick,
        "preset": PRESET,
        "model": "ViP-B/32 random init (save_pretrained), 12 frames, 224 px",
        "gflop_per_video": GFLOP_PER_VIDEO,
        "videos": f"{WIDTH}x{HEIGHT} H.264 (libx264 crf 23, default GOP) {SECONDS:g} s at {FPS} fps, synthetic",
        "video_bytes_mean": float(np.mean(sizes)),
        "batch_size": BATCH,
        "main_workers": args.workers,
        "overlap_n": args.overlap_n,
        "encode_n": args.encode_n,
        "work_dir": str(work),
    }
    result: dict[str, Any] = {"benchmark": "eval_e2e", "setup": setup}
    if set(stages) != set(STAGES) and out_json.exists():
        result = json.loads(out_json.read_text())
        if {k: result["setup"].get(k) for k in ("n", "main_workers", "overlap_n")} != {
            k: setup[k] for k in ("n", "main_workers", "overlap_n")
        }:
            raise SystemExit(f"{out_json}: other --n / --workers / --overlap-n; re-run all stages instead")
    result.setdefault("stage_machine", {s: result["machine"] for s in STAGES if "machine" in result})
    main_argv = argv(ann, "main", args.workers, "cache_main")
    if "cli" in stages:
        print(f"[cli] clipvip eval, n={args.n}, --num-workers {args.workers}", flush=True)
        main_run = run_cli(main_argv, "main")
        print(
            f"      {main_run['process_wall_s']:.1f} s; stages {json.dumps(_round(main_run['stages_s']))}", flush=True
        )
        print("[cli] same command again (embedding cache hit)", flush=True)
        cached_run = run_cli(argv(ann, "main_cached", args.workers, "cache_main"), "cached")
        print(f"      {cached_run['process_wall_s']:.1f} s", flush=True)
        if "runs" in result:  # kept for comparison (e.g. before / after a change), with that run's machine
            result["previous_runs"] = {"machine": result["stage_machine"].get("cli"), "runs": result["runs"]}
        result["runs"] = {"main": main_run, "cached_rerun": cached_run}
        for w in dict.fromkeys([0, *(int(v) for v in args.overlap_workers.split(","))]):
            print(f"[cli] clipvip eval, n={args.overlap_n}, --num-workers {w}", flush=True)
            r = run_cli(argv(ann_overlap, f"overlap_w{w}", w, f"cache_overlap_w{w}"), f"workers {w}")
            result["runs"][f"n{args.overlap_n}_workers_{w}"] = r
            print(f"      {r['process_wall_s']:.1f} s", flush=True)
    if "decode" in stages:
        print(f"[decode] decode only, n={args.n}, workers 0 and {args.workers}", flush=True)
        result["decode_only"] = {f"workers_{w}": decode_only(main_argv, w) for w in dict.fromkeys((0, args.workers))}
        rates = {k: round(v["videos_per_s"], 2) for k, v in result["decode_only"].items()}
        print(f"      {json.dumps(rates)} videos/s", flush=True)
    if "encode" in stages:
        print(f"[encode] encode only, {args.encode_n} videos", flush=True)
        result["encode_only"] = encode_only(main_argv, args.encode_n)
        print(f"      {result['encode_only']['videos_per_s']:.2f} videos/s ({result['encode_only']['dtype']})")
    if "text" in stages:
        print(f"[text] embed_texts on {args.n} captions: trimmed vs padded to the context", flush=True)
        result["text_only"] = text_only(main_argv)
        t = result["text_only"]
        print(
            f"      {t['seconds']} s; speed-up {t['speedup']:.2f}x; min cosine {t['min_cosine_trimmed_vs_padded']:.5f}"
        )
    for stage in stages:
        result["stage_machine"][stage] = machine
    result.setdefault("machine", machine)  # the first full run's; each stage's own is in "stage_machine"
    result["setup"]["generation_s_last_invocation"] = gen_s
    result["analysis"] = analyse(result)
    result["loadavg_at_end"] = load_now()
    result["uptime_at_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    write_json(out_json, result)
    print("summary (s/video):")
    for k, v in result["analysis"]["s_per_video"].items():
        print(f"  {k:<70} {v:.3f}" if v is not None else f"  {k:<70} -")
    if "runs" in result:
        print(f"  main run: {result['runs']['main']['process_wall_s']:.1f} s wall for {args.n} videos")
    print(f"bound here: {result['analysis'].get('bound_here')}; wrote {out_json}")
    return 0


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
