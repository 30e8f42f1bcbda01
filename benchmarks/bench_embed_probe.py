"""Probe: can one decode worker feed the embed job's encoder at its solo speed when each has its own core?

One 200-clip stream (no parts), the decoder pinned to core 0 on a thread or on a spawned process, the encoder pinned
to core 1; interleaved with encode-only rounds. Why it exists: it separates the GIL's cost (thread) and the cost of
moving frames between processes (process) from the job's part handling, which ``bench_scale.py embed`` measures.
Writes results/embed_probe.json.

    PYTHONPATH=src python benchmarks/bench_embed_probe.py
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, write_json
from bench_scale import RESULTS, _clips

import clipvip
from clipvip.config import VisionConfig
from clipvip.embedjob import EmbedConfig, Encoder, iter_samples, plan_parts, prepare_job
from clipvip.embedjob.decode import _timed_decode


def _init(cpus: set[int], process: bool) -> None:
    if process:
        torch.set_num_threads(1)
    os.sched_setaffinity(0, cpus)


def _stream(pool: Executor, samples: list, settings: dict, enc: Encoder, bs: int = 8) -> float:
    """videos/s of decode-ahead (two chunks) feeding the encoder, one stream."""
    t = time.perf_counter()
    ahead: deque = deque()
    it = iter(samples)
    clips: list = []
    n = 0

    def fill() -> None:
        while len(ahead) < 2 * bs:
            s = next(it, None)
            if s is None:
                return
            ahead.append(pool.submit(_timed_decode, s, settings, 60))

    fill()
    while ahead:
        fut = ahead.popleft()
        fill()
        clips += fut.result()[0][0]
        if len(clips) == bs or not ahead:
            enc(np.stack(clips))
            n += len(clips)
            clips = []
    return n / (time.perf_counter() - t)


def main() -> None:
    work = Path(tempfile.mkdtemp())
    _clips(work / "clips", 200, 10, 128)
    torch.manual_seed(0)
    vision = VisionConfig(image_size=128, patch_size=32, width=64, layers=2, heads=2)
    clipvip.CLIPViP(clipvip.tiny_config(vision=vision, num_frames=10, temporal_size=10)).save_pretrained(work / "m")
    cfg = EmbedConfig(model=str(work / "m"), out=str(work / "o"), batch_size=8, precision="fp32", threads=1)
    job = prepare_job(cfg, plan_parts([str(work / "clips")], 200))
    samples = list(iter_samples(job.parts[0]))
    enc = Encoder(job.cfg)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    pools: dict[str, Executor] = {
        "thread": ThreadPoolExecutor(1, initializer=_init, initargs=({cpus[0]}, False)),
        "process": ProcessPoolExecutor(
            1, mp_context=mp.get_context("spawn"), initializer=_init, initargs=({cpus[0]}, True)
        ),
    }
    for pool in pools.values():  # start the workers before timing
        list(pool.map(abs, [1]))
    _stream(pools["thread"], samples[:16], job.settings, enc)  # warm-up
    clips = [c.clips for c in job.decoded_chunks(0, 1) if c.clips is not None]
    res: dict[str, list[float]] = {"encode_only": [], "thread": [], "process": []}
    for _ in range(3):
        t = time.perf_counter()
        for c in clips:
            enc(c)
        res["encode_only"].append(len(samples) / (time.perf_counter() - t))
        for k in ("thread", "process"):
            res[k].append(_stream(pools[k], samples, job.settings, enc))
    out = {
        "machine": machine_info(),
        "videos_per_second": res,
        "thread_vs_encode_only_median": float(np.median(np.array(res["thread"]) / np.array(res["encode_only"]))),
        "process_vs_encode_only_median": float(np.median(np.array(res["process"]) / np.array(res["encode_only"]))),
    }
    write_json(RESULTS / "embed_probe.json", out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    for pool in pools.values():
        pool.shutdown()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
