"""Parts-based batch jobs on one process, on torchrun/Slurm ranks, or on Ray: one scheduler for every data job.

WHY: the data jobs (embed, corpus, prepare, caption) all have the same shape. The input is cut into PARTS known
up front; each part is processed independently and its output is written atomically, and a part whose output exists
is done. That one rule gives resumability (a rerun skips finished parts), fault tolerance (a killed worker loses
only its current part) and distribution (any worker may take any unfinished part) without a second scheduler.

Engines:

- ``local``: this process runs the parts, in order. Under torchrun (``RANK``/``WORLD_SIZE``) or a Slurm job array
  (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``) it runs only its own slice, ``parts[rank::world]``, so the
  same command line launched N times covers the job once, with no communication between workers.
- ``ray``: one Ray task per unfinished part on a running cluster (``address``) or a local Ray, at most
  ``max_in_flight`` at a time (backpressure), each retried up to ``retries`` times when its worker dies.

A job is any picklable object with ``num_parts``, ``is_done(part)`` and ``run_part(part) -> dict`` (its stats).
Bad SAMPLES are the job's business (skip, count, name them in the stats); an exception out of ``run_part`` means
the PART failed: it is reported in the summary, the other parts go on, and a rerun tries it again.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ENGINES: tuple[str, ...] = ("local", "ray")


class PartsJob(Protocol):
    """A job cut into parts, each written atomically by ``run_part``. A job may also define
    ``will_run_parts(parts)``: the local engine calls it with the parts it is about to run, in order, and with ``[]``
    when it is done, so the job can prepare the next part while one runs (the embed job decodes ahead across part
    boundaries). The long name keeps it from being mistaken for a job's own attribute (it once was: ``plan``)."""

    num_parts: int

    def is_done(self, part: int) -> bool: ...

    def run_part(self, part: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class WorkerSlice:
    """Which of ``world`` workers this process is (torchrun rank or Slurm array task)."""

    rank: int = 0
    world: int = 1

    def parts(self, num_parts: int) -> list[int]:
        return list(range(self.rank, num_parts, self.world))


def worker_slice(env: Mapping[str, str] | None = None) -> WorkerSlice:
    """This worker's slice from torchrun's RANK/WORLD_SIZE, else a Slurm array's task id/count, else (0, 1)."""
    env = os.environ if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        ws = WorkerSlice(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]))
    elif int(env.get("SLURM_ARRAY_TASK_COUNT", "1")) > 1:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        ws = WorkerSlice(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]))
    else:
        ws = WorkerSlice()
    if not 0 <= ws.rank < ws.world:
        raise ValueError(f"worker {ws.rank} is outside a world of {ws.world} (check RANK / SLURM_ARRAY_TASK_*)")
    return ws


@dataclass
class JobSummary:
    """What one run did: parts run now, parts already done before, parts that failed (part -> reason)."""

    ran: list[int] = field(default_factory=list)
    skipped_done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def total(self, key: str) -> int:
        """Sum of one stats counter over the parts run now; a list counts its length (e.g. ``"failed"`` files)."""
        n = 0
        for s in self.stats.values():
            v = s.get(key, 0)
            n += len(v) if isinstance(v, list | tuple) else int(v or 0)
        return n

    def failed_samples(self) -> list[dict[str, Any]]:
        """The bad samples the parts run now reported (their stats' ``failed`` lists)."""
        return [f for s in self.stats.values() for f in s.get("failed", [])]

    def failure_lines(self, limit: int = 10, where: str = "") -> list[str]:
        """One line per bad sample (up to ``limit``; ``where`` says where the rest are listed) and per failed part."""
        samples = self.failed_samples()
        lines = [f"  skipped {f.get('path') or f.get('file') or '?'}: {f.get('reason', '')}" for f in samples[:limit]]
        if len(samples) > limit:
            lines.append(f"  ... and {len(samples) - limit} more" + (f" (listed in {where})" if where else ""))
        lines += [
            f"  part {p} failed: {why} (run the command again to retry it)" for p, why in sorted(self.failed.items())
        ]
        return lines


def _run_one(job: PartsJob, part: int) -> tuple[int, dict[str, Any]]:
    return part, job.run_part(part)


def run_job(
    job: PartsJob,
    engine: str = "local",
    *,
    address: str | None = None,
    retries: int = 2,
    max_in_flight: int | None = None,
    progress: bool = True,
    slice_: WorkerSlice | None = None,
) -> JobSummary:
    """Run every unfinished part of ``job`` that belongs to this worker on ``engine``; see the module docstring."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    t0 = time.perf_counter()
    summary = JobSummary()
    mine = (slice_ or (worker_slice() if engine == "local" else WorkerSlice())).parts(job.num_parts)
    todo = []
    for p in mine:
        (summary.skipped_done if job.is_done(p) else todo).append(p)
    if engine == "local":
        _run_local(job, todo, summary, progress)
    else:
        _run_ray(job, todo, summary, progress, address, retries, max_in_flight)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_local(job: PartsJob, todo: list[int], summary: JobSummary, progress: bool) -> None:
    from tqdm import tqdm

    will_run = getattr(job, "will_run_parts", None)
    try:
        if will_run is not None:
            will_run(todo)
        for p in tqdm(todo, desc="parts", unit="part", disable=not progress or not todo):
            try:
                summary.stats[p] = job.run_part(p)
                summary.ran.append(p)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a failed part is reported, the others go on
                summary.failed[p] = f"{type(e).__name__}: {e}"
                if os.environ.get("CLIPVIP_DEBUG"):
                    traceback.print_exc()
    finally:
        if will_run is not None:
            will_run([])


def _run_ray(
    job: PartsJob,
    todo: list[int],
    summary: JobSummary,
    progress: bool,
    address: str | None,
    retries: int,
    max_in_flight: int | None,
) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install 'clipvip[ray]'") from None
    from tqdm import tqdm

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(max_retries=retries, retry_exceptions=False)(_run_one)
        job_ref = ray.put(job)
        limit = max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)) * 2)
        pending: dict[Any, int] = {}
        queue = list(todo)
        bar = tqdm(total=len(todo), desc="parts", unit="part", disable=not progress or not todo)
        while queue or pending:
            while queue and len(pending) < limit:
                p = queue.pop(0)
                pending[remote.remote(job_ref, p)] = p
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                p = pending.pop(ref)
                try:
                    _, stats = ray.get(ref)
                    summary.stats[p] = stats
                    summary.ran.append(p)
                except Exception as e:  # the task raised, or its worker died more than `retries` times
                    cause = getattr(e, "cause", None) or e
                    summary.failed[p] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
                bar.update(1)
        bar.close()
    finally:
        if started_here:
            ray.shutdown()
