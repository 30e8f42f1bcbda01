"""Probe: how much does decoding beside the embed job's encoder slow the ENCODER, with the decoder on a thread of
the encoder's process or in a worker process (``clipvip.embedjob`` ThreadDecoders / ProcessDecoders)?

The encoder (pinned to the last core) encodes the same pre-decoded clips alone, and while the job's decoders (one
worker, pinned to the first core) decode the same videos over and over in the background. Rounds are interleaved;
the ratios are the median of per-round encode-time ratios. Why it exists: it is the measurement behind decoding in
processes (``embedjob/decode_procs.py``): a thread shares the interpreter lock with the encoder's op dispatch.
Writes results/embed_probe.json.

    PYTHONPATH=src python benchmarks/bench_embed_probe.py [--videos 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, write_json
from bench_scale import RESULTS, _clips

import clipvip
from clipvip.config import VisionConfig
from clipvip.embedjob import EmbedConfig, Encoder, iter_samples, plan_parts, prepare_job
from clipvip.embedjob.decode import Decoders, ThreadDecoders


def _decode_forever(decoders: Decoders, chunks: list, settings: dict, stop: threading.Event) -> None:
    """Keep the decoders busy (two chunks in flight) until ``stop``."""
    i, inflight = 0, []
    while not stop.is_set():
        while len(inflight) < 2:
            inflight.append(decoders.submit(chunks[i % len(chunks)], settings, 60.0, block=True))
            i += 1
        t = inflight.pop(0)
        decoders.take(t)
        decoders.release(t)
    for t in inflight:
        decoders.release(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embed_probe_"))
    _clips(work / "clips", args.videos, 10, 128)
    torch.manual_seed(0)
    vision = VisionConfig(image_size=128, patch_size=32, width=64, layers=2, heads=2)
    clipvip.CLIPViP(clipvip.tiny_config(vision=vision, num_frames=10, temporal_size=10)).save_pretrained(work / "m")
    cpus = sorted(os.sched_getaffinity(0))
    dec_cpu = (cpus[0],)
    cfg = EmbedConfig(
        model=str(work / "m"), out=str(work / "o"), batch_size=8, precision="fp32", threads=1, decode_workers=1
    )
    job = prepare_job(cfg, plan_parts([str(work / "clips")], args.videos))
    samples = list(iter_samples(job.parts[0]))
    chunks = [samples[i : i + 8] for i in range(0, len(samples), 8)]
    clips = [c.clips for c in job.decoded_chunks(0, 1) if c.clips is not None]
    os.sched_setaffinity(0, {cpus[-1]})
    enc = Encoder(job.cfg)
    enc(clips[0])

    def encode() -> float:
        t = time.perf_counter()
        for c in clips:
            enc(c)
        return time.perf_counter() - t

    from clipvip.embedjob.decode_procs import ProcessDecoders

    shape = (8, 10, 3, 128, 128)
    makers = {
        "thread": lambda: ThreadDecoders(1, dec_cpu),
        "process": lambda: ProcessDecoders(1, shape, 5, dec_cpu),
    }
    warm = makers["process"]()  # start the fork server (it imports torch once) outside the timed rounds
    warm.take(warm.submit(chunks[0], job.settings, 60.0, block=True))
    warm.close()
    times: dict[str, list[float]] = {"alone": [], "thread": [], "process": []}
    for r in range(args.rounds):
        times["alone"].append(encode())
        for name, make in makers.items():
            decoders, stop = make(), threading.Event()
            bg = threading.Thread(target=_decode_forever, args=(decoders, chunks, job.settings, stop))
            bg.start()
            time.sleep(1.0)  # the workers are up and decoding
            try:
                times[name].append(encode())
            finally:
                stop.set()
                bg.join()
                decoders.close()
        print(r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    alone = np.array(times["alone"])
    out = {
        "machine": machine_info(),
        "videos": args.videos,
        "encode_seconds": times,
        "encoder_slowdown_median": {k: float(np.median(np.array(times[k]) / alone)) for k in ("thread", "process")},
    }
    write_json(RESULTS / "embed_probe.json", out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
