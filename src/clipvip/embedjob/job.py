"""``clipvip embed``: videos -> embedding parts, resumable, on one process, torchrun/Slurm slices, or Ray Data.

WHY the work is split into "decode a chunk" and "encode a chunk": the two stages run in different places depending
on the engine (threads of this process, or Ray CPU tasks feeding encoder actors), but a chunk is always the same
``batch_size`` consecutive samples of a part, decoded by the same function and encoded as the same batch. The
batch a clip is encoded in is therefore independent of the engine, which is what makes every engine's embeddings
bit-identical (CPU matmuls can round differently for a different batch composition).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clipvip.embedjob.decode import DecodedChunk, Decoders, DecodeStream, ThreadDecoders
from clipvip.embedjob.inputs import PartSource
from clipvip.embedjob.layout import META_FILE, stats_path, write_part
from clipvip.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    """How videos become embedding rows. Recorded in embed.json; a rerun into the same folder must agree."""

    model: str
    out: str
    num_frames: int | None = None  # None: the model's
    window: float | None = None  # seconds: one row per window of a long video (None: one row per video)
    stride: float | None = None
    batch_size: int = 8  # samples per chunk = per encoder batch
    dtype: Literal["fp16", "fp32"] = "fp16"
    decode_workers: int = 2  # decoders of the one-process engine
    # Processes (the default) write frames into shared memory and leave the encoder's interpreter lock alone; threads
    # need no /dev/shm (used anyway when it is too small for the buffers). See embedjob/decode_procs.py. From Python,
    # run a job with processes under ``if __name__ == "__main__":``: the workers import the calling script's module.
    decode_in: Literal["processes", "threads"] = "processes"
    # Pin the decoders to these CPUs (None: anywhere). WHY: where some cores feed the encoder (a GPU's feeder,
    # or a CPU encoder), decoders pinned elsewhere cannot preempt it; the scale benchmark gives each stage a core.
    decode_cpus: tuple[int, ...] | None = None
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    threads: int | None = None  # torch threads of the encoder (None: torch's default)
    timeout: float = 60.0  # seconds allowed per file
    device: str | None = None  # None: cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in ("fp16", "fp32"):
            raise ValueError(f"dtype must be fp16 or fp32, got {self.dtype!r}")
        if self.window is not None and self.window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window}")
        if self.stride is not None and (self.window is None or self.stride <= 0):
            raise ValueError("stride needs a window and must be > 0")
        if self.decode_in not in ("processes", "threads"):
            raise ValueError(f"decode_in must be processes or threads, got {self.decode_in!r}")


class Encoder:
    """The model, loaded once per process (or Ray actor), turning uint8 clips into L2-normalised fp32 rows."""

    def __init__(self, cfg: EmbedConfig) -> None:
        import torch

        import clipvip

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = clipvip.load(cfg.model, num_frames=cfg.num_frames).to(device)
        self.model = clipvip.optimize_for_inference(model, dtype=cfg.precision)
        self.device = device
        self.batch_size = cfg.batch_size

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        import torch

        from clipvip.video import normalize

        out = []
        with torch.inference_mode():
            for lo in range(0, len(clips), self.batch_size):
                # uint8 to the device, normalised there: a quarter of the bytes over PCIe, the arithmetic on the GPU
                x = torch.from_numpy(np.ascontiguousarray(clips[lo : lo + self.batch_size])).to(self.device)
                out.append(self.model.encode_video(normalize(x)).float().cpu().numpy())
        return np.concatenate(out)


def frame_settings(cfg: EmbedConfig, model_config: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a row means; the same keys as a `clipvip index` (search reads num_frames)."""
    return {
        "num_frames": cfg.num_frames or model_config["num_frames"],
        "image_size": model_config["vision"]["image_size"],
        "window": cfg.window,
        "stride": (cfg.stride or cfg.window) if cfg.window else None,
    }


class EmbedJob:
    """A ``clipvip.jobs.PartsJob``: part N of ``parts`` -> the three files of part N (see ``layout``)."""

    def __init__(self, cfg: EmbedConfig, parts: list[PartSource], model_meta: dict[str, Any]) -> None:
        self.cfg, self.parts, self.model_meta = cfg, parts, model_meta
        self.settings = frame_settings(cfg, model_meta["config"])
        self.num_parts = len(parts)
        self._encoder: Encoder | None = None
        self._decoders: Decoders | None = None
        self._stream: DecodeStream | None = None

    def __getstate__(self) -> dict[str, Any]:  # the model and the decoders are made again wherever the job runs
        return {**self.__dict__, "_encoder": None, "_decoders": None, "_stream": None}

    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder(self.cfg)
        return self._encoder

    def is_done(self, part: int) -> bool:
        return stats_path(self.cfg.out, part).exists()

    def new_decoders(self) -> Decoders:
        """The decoders ``cfg`` asks for: processes with shared chunk buffers, unless /dev/shm has too little room
        for them (a container's default 64 MB) or threads were asked for."""
        workers = self.cfg.decode_workers
        if self.cfg.decode_in == "processes":
            from clipvip.embedjob.decode_procs import SHM_DIR, ProcessDecoders, shared_memory_room

            s = self.settings
            shape = (self.cfg.batch_size, s["num_frames"], 3, s["image_size"], s["image_size"])
            slots = ProcessDecoders.min_slots(workers)
            need, room = slots * int(np.prod(shape)), shared_memory_room()
            if need <= room // 2:
                return ProcessDecoders(workers, shape, slots, self.cfg.decode_cpus)
            log.warning(
                "%s has %.0f MB free, %.0f MB wanted for decode buffers: decoding on threads (slower beside a CPU "
                "encoder); give the container more shared memory (docker run --shm-size)",
                SHM_DIR,
                room / 2**20,
                2 * need / 2**20,
            )
        return ThreadDecoders(workers, self.cfg.decode_cpus)

    def stream(self, parts: list[int], decoders: Decoders) -> DecodeStream:
        """Decoded chunks of ``parts``, in order, from ``decoders``."""
        sources = [(p, self.parts[p]) for p in parts]
        return DecodeStream(sources, self.settings, self.cfg.batch_size, self.cfg.timeout, decoders)

    def decoded_chunks(self, part: int, workers: int) -> Iterator[DecodedChunk]:
        """Part ``part`` decoded on threads of its own, clips owned (the Ray decode task: a process of its own)."""
        decoders = ThreadDecoders(workers, self.cfg.decode_cpus)
        try:
            yield from self.stream([part], decoders).chunks(part)
        finally:
            decoders.close()

    def will_run_parts(self, parts: list[int]) -> None:
        """The parts this process runs next, in order (``clipvip.jobs`` calls it; ``[]`` when done): decoding then
        runs ahead across their boundaries on one pool kept for the job."""
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        if parts:
            if self._decoders is None:
                self._decoders = self.new_decoders()
            self._stream = self.stream(parts, self._decoders)
            self._stream.prime()
        elif self._decoders is not None:
            self._decoders.close()
            self._decoders = None

    def run_part(self, part: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        enc = self.encoder()
        embs, rows, failed = [], [], []
        decode_s = encode_s = wait_s = 0.0
        if self._stream is not None and self._stream.is_next(part):
            chunks = self._stream.chunks(part)
        else:  # not planned (a caller running one part): decode it alone
            chunks = self.decoded_chunks(part, self.cfg.decode_workers)
        while True:
            tw = time.perf_counter()
            chunk = next(chunks, None)
            wait_s += time.perf_counter() - tw
            if chunk is None:
                break
            decode_s += chunk.decode_seconds
            failed += chunk.failed
            if chunk.clips is not None:
                te = time.perf_counter()
                embs.append(enc(chunk.clips))
                encode_s += time.perf_counter() - te
                rows += chunk.rows
        timing = {"decode_seconds": decode_s, "encode_seconds": encode_s, "wait_seconds": wait_s}
        return self.write_part(part, embs, rows, failed, time.perf_counter() - t0, timing)

    def write_part(
        self,
        part: int,
        embs: list[np.ndarray],
        rows: list[dict[str, Any]],
        failed: list[dict[str, str]],
        seconds: float,
        timing: dict[str, float],
    ) -> dict[str, Any]:
        """The part's three files (``layout.write_part``); returns its stats."""
        dim = int(self.model_meta["config"]["embed_dim"])
        emb = np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)
        if len(emb) != len(rows):
            raise RuntimeError(f"part {part}: {len(emb)} embeddings for {len(rows)} metadata rows")
        fp = self.model_meta["fingerprint"]
        stats = {
            "part": part,
            "done": len({r["path"] for r in rows}),
            "rows": len(rows),
            "failed": failed,
            "seconds": round(seconds, 3),
            **{k: round(v, 3) for k, v in timing.items()},
        }
        write_part(self.cfg.out, part, emb, [{**r, "model": fp} for r in rows], stats, self.cfg.dtype)
        return stats


def prepare_job(cfg: EmbedConfig, parts: list[PartSource]) -> EmbedJob:
    """Load the model once here for its fingerprint and config, create the output folders, and write (or check)
    embed.json: a rerun into the same folder with another model or other frame settings would mix embeddings."""
    import clipvip
    from clipvip.weights.fingerprint import model_fingerprint

    model = clipvip.load(cfg.model, num_frames=cfg.num_frames)
    model_meta = {
        "path": str(Path(cfg.model).resolve()) if "://" not in cfg.model else cfg.model,
        "fingerprint": model_fingerprint(model),
        "config": model.config.to_dict(),
    }
    del model
    job = EmbedJob(cfg, parts, model_meta)
    out = Path(cfg.out)
    for sub in ("embeddings", "metadata", "stats"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta = {
        "format": 1,
        "model": model_meta,
        "settings": job.settings,
        "dtype": cfg.dtype,
        "num_parts": len(parts),
        "batch_size": cfg.batch_size,
    }
    p = out / META_FILE
    if p.exists():
        from clipvip.embedjob.layout import read_embed_meta

        old = read_embed_meta(out)
        same = {k: old.get(k) for k in ("settings", "dtype", "num_parts", "batch_size")}
        if old["model"]["fingerprint"] != model_meta["fingerprint"] or same != {
            k: meta[k] for k in ("settings", "dtype", "num_parts", "batch_size")
        }:
            raise ValueError(
                f"{p}: this folder holds embeddings of another model or other settings "
                f"({old['model']['path']}, {same}); use a new --out folder"
            )
    atomic_write_json(p, meta)
    return job
