"""The captioning job: per-rank append-only part files, resumable, merged atomically into one output.

Each rank (a torchrun rank or a Slurm array task) appends to its own part file
(``OUT.parts/part-RRRRR-of-WWWWW.jsonl``); a restarted run skips what is already captioned (and cuts a half-written
last line); bad videos are skipped and listed; when every rank is done, the parts are merged (deduplicated by clip
id) into ``OUT`` atomically.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipvip.captioning.captioner import Captioner
from clipvip.captioning.inputs import CaptionInput, FrameItem, FrameStream
from clipvip.io import atomic_write_json, read_jsonl, write_jsonl
from clipvip.jobs import worker_slice

log = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 1000
"""Failures kept in memory for the report; the failures file lists every one."""


def parts_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def failed_path(out: str | Path) -> Path:
    """``captions.jsonl`` -> ``captions.failed.jsonl``: the merged list of clips that could not be captioned."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".failed.jsonl")


def _part_name(kind: str, rank: int, world_size: int, suffix: str = "jsonl") -> str:
    return f"{kind}-{rank:05d}-of-{world_size:05d}.{suffix}"


def repair_jsonl(path: str | Path) -> int:
    """Cut a half-written last line (a run killed mid-write) so appends start clean; returns bytes removed.

    Only the LAST line can be partial in an append-only file; a bad line elsewhere is corruption and raises."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1  # everything up to the last newline ...
        tail = data[keep:]
        if tail.strip():
            try:  # ... plus a complete final line that only lacks its newline
                json.loads(tail)
                f.seek(0, io.SEEK_END)
                f.write(b"\n")
                return 0
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
        last_start = data.rfind(b"\n", 0, max(keep - 1, 0)) + 1
        last = data[last_start:keep]
        if last.strip():
            try:
                json.loads(last)
            except (json.JSONDecodeError, UnicodeDecodeError):  # newline written but the line is garbage
                keep = last_start
        if keep < len(data):
            f.truncate(keep)
            log.warning("%s: cut %d bytes of a half-written last line", path, len(data) - keep)
        return len(data) - keep


def _done_ids(out: Path, keep: Callable[[str], bool], include_failed: bool) -> set[str]:
    """Clip ids already captioned (merged output + every part, any world size) that this rank would own."""
    done: set[str] = set()
    files = [out] if out.exists() else []
    if include_failed and failed_path(out).exists():
        files.append(failed_path(out))
    pdir = parts_dir(out)
    if pdir.is_dir():
        files += sorted(pdir.glob("part-*.jsonl"))
        if include_failed:
            files += sorted(pdir.glob("failed-*.jsonl"))
    for f in files:
        for rec in read_jsonl(f, skip_torn_tail=True):
            cid = str(rec["clip_id"])
            if keep(cid):
                done.add(cid)
    return done


class _Appender:
    """Append-only jsonl writer: one write + flush per batch, so a crash loses at most the batch in flight."""

    def __init__(self, path: Path) -> None:
        repair_jsonl(path)
        self.path = path
        self._f = open(path, "a", encoding="utf-8")  # closed in close()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if text:
            self._f.write(text)
            self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


@dataclass
class MergeReport:
    captions: int
    duplicates: int
    failed: int
    out: str
    failed_out: str


def merge_parts(out: str | Path) -> MergeReport:
    """OUT (if any) + every part file -> OUT, one line per clip id (first wins), written atomically.

    Also merges the failure lists into ``failed_path(out)``, minus clips that were captioned on a retry.
    Idempotent, so two ranks finishing at once may both merge."""
    out = Path(out)
    pdir = parts_dir(out)
    sources = ([out] if out.exists() else []) + (sorted(pdir.glob("part-*.jsonl")) if pdir.is_dir() else [])
    seen: set[str] = set()
    dup = 0

    def captions() -> Iterator[dict[str, Any]]:
        nonlocal dup
        for src in sources:
            for rec in read_jsonl(src, skip_torn_tail=True):
                cid = str(rec["clip_id"])
                if cid in seen:
                    dup += 1
                    continue
                seen.add(cid)
                yield rec

    write_jsonl(out, captions())
    fout = failed_path(out)
    failed: dict[str, dict[str, Any]] = {}
    fsources = ([fout] if fout.exists() else []) + (sorted(pdir.glob("failed-*.jsonl")) if pdir.is_dir() else [])
    for src in fsources:
        for rec in read_jsonl(src, skip_torn_tail=True):
            cid = str(rec["clip_id"])
            if cid not in seen:
                failed[cid] = rec  # the latest attempt's error wins
    if failed or fout.exists():
        write_jsonl(fout, failed.values())
    return MergeReport(len(seen), dup, len(failed), str(out), str(fout))


def _identity(x: Any) -> Any:  # the DataLoader's collate: FrameItems pass through one by one
    return x


@dataclass
class CaptionJobConfig:
    """Job settings: batching, workers, sharding, resume behaviour."""

    batch_size: int = 32
    num_workers: int = 4
    rank: int | None = None  # None: clipvip.jobs.worker_slice (torchrun RANK / WORLD_SIZE, or a Slurm array)
    world_size: int | None = None
    frame_size: int | None = None  # None: the captioner processor's input size
    limit: int | None = None  # caption at most this many new clips on this rank, then stop (no merge)
    retry_failed: bool = False  # default: clips listed as failed are not retried on resume
    merge: bool = True  # merge when every rank of this world size has finished
    progress: bool = True


@dataclass
class CaptionReport:
    rank: int
    world_size: int
    captioned: int  # new captions written by this run
    already_done: int  # clips of this rank skipped because a previous run captioned them (or failed them)
    num_failed: int  # clips this run could not read (all listed in the failed-*.jsonl part / OUT's failed file)
    failed: list[dict[str, str]]  # the first MAX_REPORTED_FAILURES of them: clip_id, source, error
    finished: bool  # this rank's input is exhausted (False when stopped by ``limit``)
    merge: MergeReport | None
    part: str


def run_captioning(
    inputs: CaptionInput, out: str | Path, captioner: Captioner, config: CaptionJobConfig = CaptionJobConfig()
) -> CaptionReport:
    """Caption this rank's share of ``inputs`` into its part file; merge into ``out`` when all ranks are done."""
    from tqdm.auto import tqdm

    env = worker_slice()  # torchrun's RANK/WORLD_SIZE, else a Slurm array task, else (0, 1)
    rank = env.rank if config.rank is None else config.rank
    world = env.world if config.world_size is None else config.world_size
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    if config.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {config.batch_size}")
    out = Path(out)
    pdir = parts_dir(out)
    pdir.mkdir(parents=True, exist_ok=True)
    done_marker = pdir / _part_name("done", rank, world, "json")
    done_marker.unlink(missing_ok=True)

    def keep(cid: str) -> bool:
        return inputs.belongs_to(cid, rank, world) is not False

    skip = _done_ids(out, keep, include_failed=not config.retry_failed)
    frame_size = config.frame_size or captioner.frame_size
    stream = FrameStream(inputs, rank, world, skip, frame_size)
    if config.num_workers > 0:
        items: Iterable[FrameItem] = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=config.num_workers, collate_fn=_identity, prefetch_factor=4
        )
    else:
        items = stream
    part_file = pdir / _part_name("part", rank, world)
    writer = _Appender(part_file)
    failed_writer = _Appender(pdir / _part_name("failed", rank, world))
    failed: list[dict[str, str]] = []
    captioned = num_failed = 0
    finished = True
    batch: list[FrameItem] = []
    bar = tqdm(desc=f"caption rank {rank}/{world}", unit="clip", disable=not config.progress or None, position=rank)

    def flush() -> None:
        nonlocal captioned
        caps = captioner.caption([b.frame for b in batch])
        writer.write({"clip_id": b.clip_id, "caption": c, "captioner": captioner.name} for b, c in zip(batch, caps))
        captioned += len(batch)
        bar.update(len(batch))
        batch.clear()

    try:
        for item in items:
            if item.error is not None:
                rec = {"clip_id": item.clip_id, "source": item.source, "error": item.error}
                log.warning("skipped %s (%s): %s", item.clip_id, item.source, item.error)
                num_failed += 1
                if len(failed) < MAX_REPORTED_FAILURES:
                    failed.append(rec)
                failed_writer.write([rec])
                bar.set_postfix(failed=num_failed)
                continue
            if config.limit is not None and captioned + len(batch) >= config.limit:
                finished = False
                break
            batch.append(item)
            if len(batch) == config.batch_size:
                flush()
        if batch:
            flush()
    finally:
        bar.close()
        writer.close()
        failed_writer.close()

    merge = None
    if finished:
        atomic_write_json(done_marker, {"rank": rank, "world_size": world, "captioned": captioned}, indent=None)
        markers = [pdir / _part_name("done", r, world, "json") for r in range(world)]
        if config.merge and all(m.exists() for m in markers):
            merge = merge_parts(out)
            log.info(
                "merged %d captions into %s (%d failed listed in %s)",
                merge.captions,
                out,
                merge.failed,
                merge.failed_out,
            )
            if world == 1:  # nobody else can be reading the parts: keep only the merged output
                shutil.rmtree(pdir, ignore_errors=True)
    return CaptionReport(
        rank=rank,
        world_size=world,
        captioned=captioned,
        already_done=len(skip),
        num_failed=num_failed,
        failed=failed,
        finished=finished,
        merge=merge,
        part=str(part_file),
    )
