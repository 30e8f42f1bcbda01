"""``clipvip embed --engine ray``: a Ray Data pipeline of CPU decode tasks feeding encoder actors.

WHY Ray Data and not one Ray task per part (``clipvip.jobs``' Ray engine): a part's decoding and its encoding want
different resources (many CPU cores vs one GPU), and with one task per part a GPU would sit idle while its own CPU
decodes. Here decoding runs as CPU tasks (one per part, streaming its chunks out as they are decoded) and encoding
in a pool of actors (one per GPU; CPU actors without one) that each load the model once. Ray Data's streaming
executor bounds the decoded frames in flight (backpressure), retries a decode task whose worker died, and restarts
a killed encoder actor and resubmits its batch (``max_restarts`` / ``max_task_retries``, on by default).

The driver gathers each part's encoded chunks and writes the part with the same ``EmbedJob.write_part`` as the
one-process engine, once all its chunks arrived. A chunk delivered twice (a retried task) is counted once. Chunks
are the same as in the one-process engine and encoded as the same batches, so the output is identical.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipvip.embedjob.job import EmbedJob, Encoder
from clipvip.jobs import JobSummary


def _resolve(job: Any) -> EmbedJob:
    import ray

    return ray.get(job) if isinstance(job, ray.ObjectRef) else job


def decode_part(row: dict[str, Any], job: Any) -> Iterator[dict[str, Any]]:
    """Ray Data ``flat_map``: one part -> its decoded chunks, one row each (pickled, uint8 frames). A part whose
    input cannot be read at all (an unreadable shard) becomes one row carrying the error: it fails that part only."""
    job = _resolve(job)
    part = int(row["part"])
    try:
        for chunk in job.decoded_chunks(part, workers=1):
            yield {"part": part, "chunk": chunk.index, "payload": pickle.dumps(chunk, protocol=5)}
    except Exception as e:  # noqa: BLE001 - reported as this part's failure by the driver
        yield {"part": part, "chunk": -1, "payload": pickle.dumps(f"{type(e).__name__}: {e}")}


class EncoderActor:
    """Ray Data ``map_batches`` callable class: loads the model once, encodes one decoded chunk per call."""

    def __init__(self, job: Any) -> None:
        self.job = _resolve(job)
        self.encoder = Encoder(self.job.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["payload"]:
            item = pickle.loads(payload)
            if not isinstance(item, str) and item.clips is not None:
                t0 = time.perf_counter()
                emb = self.encoder(item.clips)
                item.clips = None  # the frames are not sent back to the driver
                item = (item, emb, time.perf_counter() - t0)
            elif not isinstance(item, str):
                item = (item, None, 0.0)
            out.append(pickle.dumps(item, protocol=5))
        return {"part": batch["part"], "chunk": batch["chunk"], "payload": np.array(out, dtype=object)}


@dataclass
class _PartState:
    chunks: dict[int, tuple[Any, np.ndarray | None, float]] = field(default_factory=dict)
    n_chunks: int | None = None


def run_embed_ray(
    job: EmbedJob,
    *,
    address: str | None = None,
    num_encoders: int | None = None,
    encoder_cls: type = EncoderActor,
    progress: bool = True,
) -> JobSummary:
    """Run the unfinished parts of ``job`` on Ray (a cluster at ``address``, or a local Ray started here).

    ``num_encoders``: encoder actors (default: one per GPU, else one). ``encoder_cls``: the actor class (tests pass
    one that kills itself once)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RuntimeError("--engine ray needs Ray Data: pip install 'clipvip[ray]'") from None
    from tqdm import tqdm

    t0 = time.perf_counter()
    summary = JobSummary()
    todo = []
    for p in range(job.num_parts):
        (summary.skipped_done if job.is_done(p) else todo).append(p)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n_enc = num_encoders or max(1, gpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.verbose_progress = False
        job_ref = ray.put(job)
        ds = ray.data.from_items([{"part": p} for p in todo], override_num_blocks=len(todo))
        # a decode task whose worker dies is resubmitted by Ray (a task's default max_retries is 3)
        ds = ds.flat_map(decode_part, fn_kwargs={"job": job_ref}, num_cpus=1)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        ds = ds.map_batches(
            encoder_cls,
            fn_constructor_kwargs={"job": job_ref},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=n_enc),
            batch_format="numpy",
            **resources,
        )
        states: dict[int, _PartState] = {}
        bar = tqdm(total=len(todo), desc="parts", unit="part", disable=not progress)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for part, chunk, payload in zip(batch["part"], batch["chunk"], batch["payload"], strict=True):
                part, chunk = int(part), int(chunk)
                item = pickle.loads(payload)
                if part in summary.failed or part in summary.stats:
                    continue
                if isinstance(item, str):  # the part's input could not be read
                    summary.failed[part] = item
                    bar.update(1)
                    continue
                st = states.setdefault(part, _PartState())
                decoded, emb, enc_s = item
                st.chunks[chunk] = (decoded, emb, enc_s)
                if decoded.last:
                    st.n_chunks = chunk + 1
                if st.n_chunks is not None and len(st.chunks) == st.n_chunks:
                    _write(job, part, states.pop(part), summary)
                    bar.update(1)
        bar.close()
        for part, st in states.items():  # only if Ray lost chunks without raising
            summary.failed[part] = f"incomplete: {len(st.chunks)} chunks arrived"
    finally:
        if started_here:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary


def _write(job: EmbedJob, part: int, st: _PartState, summary: JobSummary) -> None:
    embs, rows, failed = [], [], []
    decode_s = encode_s = 0.0
    for i in range(st.n_chunks or 0):
        decoded, emb, enc_s = st.chunks[i]
        decode_s += decoded.decode_seconds
        encode_s += enc_s
        failed += decoded.failed
        if emb is not None:
            embs.append(emb)
            rows += decoded.rows
    timing = {"decode_seconds": decode_s, "encode_seconds": encode_s}
    try:
        # seconds: worker time spent on the part (its stages ran on different machines, overlapping other parts)
        summary.stats[part] = job.write_part(part, embs, rows, failed, decode_s + encode_s, timing)
        summary.ran.append(part)
    except OSError as e:
        summary.failed[part] = f"{type(e).__name__}: {e}"
