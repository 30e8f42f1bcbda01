"""Data sets: fine-tuning retrieval (map-style) and the post-pretraining corpus (streaming), plus ``collate``.

A sample that cannot be decoded is never an exception inside a DataLoader worker (that would kill a multi-day
job): the data set returns a marker ``{"skipped": {"path", "reason", "video_index"}}`` and :func:`collate` stacks
the good items and lists the bad ones in ``batch["skipped"]``, so the trainer / evaluator can count and log them
in the main process whatever worker produced them (:class:`SkipCounter` keeps the per-epoch summary).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from clipvip.data.annotations import Sample, load_annotations, resolve_videos
from clipvip.data.shards import ShardSample, iter_shard_samples
from clipvip.io import read_jsonl
from clipvip.tokenizer import tokenize
from clipvip.video.read import DEFAULT_TIMEOUT, VideoDecodeError, normalize
from clipvip.video.read import read_frames as _read_frames

log = logging.getLogger(__name__)

Split = Literal["train", "eval", "val", "test"]


def _marker(path: str, reason: str, video_index: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"skipped": {"path": str(path), "reason": reason, "video_index": video_index, **extra}}


# ------------------------------------------------------------------------------------------------- collate


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good items (tensors -> stacked, numbers -> LongTensor/FloatTensor, the rest -> lists) and put the
    bad ones' ``{"path", "reason", "video_index"}`` into ``batch["skipped"]``. An all-bad batch has only
    "skipped" (and an empty "video_index")."""
    good = [b for b in batch if "skipped" not in b]
    out: dict[str, Any] = {"skipped": [b["skipped"] for b in batch if "skipped" in b]}
    if not good:
        out["video_index"] = torch.zeros(0, dtype=torch.long)
        return out
    for key in good[0]:
        vals = [b[key] for b in good]
        if isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], bool):
            out[key] = vals
        elif isinstance(vals[0], (int, np.integer)):
            out[key] = torch.tensor(vals, dtype=torch.long)
        elif isinstance(vals[0], float):
            out[key] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[key] = vals
    return out


@dataclass
class SkipCounter:
    """Accumulates ``batch["skipped"]`` over an epoch (in the main process, so all workers are counted)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    seen: int = 0

    def update(self, batch: dict[str, Any]) -> int:
        """Count one collated batch; returns how many of its samples were skipped."""
        sk = list(batch.get("skipped") or [])
        self.items.extend(sk)
        v = batch.get("video")
        self.seen += len(sk) + (int(v.shape[0]) if isinstance(v, torch.Tensor) else 0)
        return len(sk)

    def __len__(self) -> int:
        return len(self.items)

    def reset(self) -> None:
        self.items.clear()
        self.seen = 0

    def summary(self, max_examples: int = 5) -> str:
        """One line for the end-of-epoch log: how many, why (most common reasons), which files (first few)."""
        if not self.items:
            return f"no samples skipped (of {self.seen})"
        reasons = Counter(_short_reason(s.get("reason", "")) for s in self.items)
        why = "; ".join(f"{n}x {r}" for r, n in reasons.most_common(3))
        eg = ", ".join(str(s.get("path")) for s in self.items[:max_examples])
        return f"skipped {len(self.items)} of {self.seen} samples ({why}); e.g. {eg}"


def _short_reason(reason: str) -> str:
    return re.sub(r"\s+", " ", reason.split(":")[0]).strip()[:60] or "unknown"


# ------------------------------------------------------------------------------------------- retrieval data


class RetrievalDataset(Dataset):
    """Fine-tuning / evaluation on a retrieval benchmark.

    ``split="train"``: one item per video per epoch with a caption drawn at random (a different one each epoch;
    deterministic in ``(seed, epoch, index)``, so workers agree) and the official random frame jitter.
    Any other split is evaluation: one item per video (uniform frames, no text); every caption is its own query
    in ``self.texts`` with ``self.text_to_video[i]`` = index of its video (the standard protocol).

    ``samples``: a list of :class:`Sample` or an annotation file (then ``fmt`` and ``annotation_options`` go to
    :func:`load_annotations`). Videos are ``template.format(root=video_root, video_id=...)``; missing files are
    dropped with one logged summary (``self.missing``). Call :meth:`set_epoch` each epoch (before creating the
    DataLoader iterator; with ``persistent_workers`` the workers keep the epoch they started with).
    """

    def __init__(
        self,
        samples: Sequence[Sample] | str | os.PathLike,
        video_root: str | os.PathLike = ".",
        split: Split = "train",
        num_frames: int = 12,
        size: int = 224,
        context_length: int = 77,
        *,
        fmt: str | None = None,
        template: str | None = None,
        annotation_options: dict[str, Any] | None = None,
        resize: Literal["squash", "crop"] = "squash",
        seed: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        threads: int | None = 1,
        check_files: bool = True,
    ) -> None:
        if split not in ("train", "eval", "val", "test"):
            raise ValueError(f"split must be train / eval / val / test, got {split!r}")
        if isinstance(samples, (str, os.PathLike)):
            if fmt is None:
                raise ValueError(f"{samples}: give fmt= (one of jsonl, msrvtt, didemo, ...) to read it")
            samples = load_annotations(samples, fmt, **(annotation_options or {}))
        samples = list(samples)
        if not samples:
            raise ValueError("RetrievalDataset: no samples")
        if template is None and fmt is None:
            template = "{root}/{video_id}.mp4"
        if check_files:
            res = resolve_videos(samples, video_root, template=template, fmt=fmt, on_missing="skip")
            self.samples, self.paths, self.missing = res.samples, res.paths, res.missing
            gone = {vid for vid, _ in res.missing}
            self.missing_texts = sum(len(s.texts) for s in samples if s.video_id in gone)  # dropped with their video
            if not self.samples:
                raise FileNotFoundError(f"RetrievalDataset: {res.summary()}")
        else:
            from clipvip.data.annotations import DEFAULT_TEMPLATES, video_path

            tpl = template or DEFAULT_TEMPLATES[fmt or "jsonl"]
            self.samples, self.missing, self.missing_texts = samples, [], 0
            self.paths = [video_path(s, tpl, video_root) for s in samples]
        self.train = split == "train"
        self.num_frames, self.size, self.context_length = num_frames, size, context_length
        self.resize, self.seed, self.timeout, self.threads = resize, seed, timeout, threads
        self.epoch = 0
        self.texts: list[str] = [t for s in self.samples for t in s.texts]
        self.text_to_video: list[int] = [i for i, s in enumerate(self.samples) for _ in s.texts]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            vf = _read_frames(
                path,
                num_frames=self.num_frames,
                size=self.size,
                mode="random" if self.train else "uniform",
                resize=self.resize,
                rng=rng,
                timeout=self.timeout,
                threads=self.threads,
            )
        except VideoDecodeError as e:
            return _marker(path, e.reason, index)
        frames = vf.frames
        if frames.shape[0] != self.num_frames:  # an image: repeat it so batches stack
            frames = frames.expand(self.num_frames, -1, -1, -1)
        item: dict[str, Any] = {"video": normalize(frames), "video_index": index, "path": path}
        if self.train:
            texts = self.samples[index].texts
            text = texts[int(rng.integers(len(texts)))]
            item["text"] = tokenize([text], self.context_length)[0]
        return item


# --------------------------------------------------------------------------------------- sharding helpers


def worker_slot() -> tuple[int, int]:
    """(this reader's index, number of readers) over torch.distributed ranks x DataLoader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + wid, world * nw


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard list from a list, a glob (``shards/*.tar``) or brace ranges (``shard-{00000..00009}.tar``)."""
    if not isinstance(spec, (str, os.PathLike)):
        return [p for s in spec for p in expand_shards(s)]
    spec = os.fspath(spec)
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if m:
        a, b = m.group(1), m.group(2)
        width = len(a)
        return [
            p
            for i in range(int(a), int(b) + 1)
            for p in expand_shards(spec[: m.start()] + str(i).zfill(width) + spec[m.end() :])
        ]
    if any(c in spec for c in "*?["):
        return sorted(glob.glob(spec))
    return [spec]


def iter_manifest_rows(path: str) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl or parquet manifest, streamed (parquet by record batches)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for rb in pf.iter_batches(batch_size=1024):
            yield from rb.to_pylist()
        return
    yield from read_jsonl(path)  # a bad line: JsonlError (a ValueError) naming file:line


def manifest_video_path(row: dict[str, Any], clip_id: str, video_root: str, key: str | None = None) -> str:
    """The manifest's video-path rule, shared by ``PretrainDataset`` and ``clipvip caption`` so both read the same
    files: the row's ``key`` (default ``video``, then ``path``), else ``{clip_id}.mp4``; relative to ``video_root``."""
    rel = str(row[key]) if key else str(row.get("video") or row.get("path") or f"{clip_id}.mp4")
    return rel if os.path.isabs(rel) or "://" in rel else os.path.join(video_root, rel)


def load_captions(path: str | os.PathLike) -> dict[str, str]:
    """``{"clip_id", "caption"}`` jsonl (what ``clipvip caption`` writes) -> {clip_id: caption}."""
    out: dict[str, str] = {}
    for n, row in enumerate(iter_manifest_rows(os.fspath(path)), 1):
        if not isinstance(row, dict) or "clip_id" not in row or "caption" not in row:
            raise ValueError(f"{path}: row {n}: caption rows are objects with 'clip_id' and 'caption', got {row!r:.80}")
        out[str(row["clip_id"])] = str(row["caption"])
    return out


# ---------------------------------------------------------------------------------------- pretraining data


class PretrainDataset(IterableDataset):
    """The post-pretraining corpus (paper Sec. 4.1/4.3): per clip a video, its subtitle (ASR) and an auxiliary
    caption of its middle frame. Streams, so the corpus never sits in memory.

    ``source``: a manifest (``.jsonl`` / ``.parquet``; rows ``{"clip_id", "video"?, "subtitle" (or "text"),
    "caption"?}``, ``video`` relative to ``video_root``, default ``{video_root}/{clip_id}.mp4``) or WebDataset
    tar shards as video2dataset writes them (``key.mp4`` + ``key.txt`` (subtitle) and/or ``key.json``), given as
    a list, a glob or ``shard-{00000..00099}.tar``. Shards (or manifest rows) are divided between
    torch.distributed ranks x DataLoader workers; ``shuffle`` reorders shards per epoch and mixes samples in a
    ``shuffle_buffer``.

    Captions: the row's / json's ``caption_field`` (default "caption"), else ``captions`` (a ``{"clip_id",
    "caption"}`` jsonl from ``clipvip caption``, loaded into a dict: ~100 bytes per clip). A clip without a
    caption is skipped (reported like a bad file) unless ``require_caption=False`` (then the subtitle is used).

    Items: ``{"video": [T,3,H,W], "frame": [1,3,H,W] (middle-frame rule), "subtitle": [L], "caption": [L],
    "clip_id": str, "path": str}``, normalised; failures are ``{"skipped": {...}}`` markers for :func:`collate`.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        video_root: str | os.PathLike = ".",
        captions: str | os.PathLike | None = None,
        num_frames: int = 12,
        size: int = 224,
        context_length: int = 77,
        *,
        mode: Literal["uniform", "random"] = "random",
        resize: Literal["squash", "crop"] = "squash",
        caption_field: str = "caption",
        subtitle_field: str = "subtitle",
        require_caption: bool = True,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        seed: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        threads: int | None = 1,
    ) -> None:
        self.shards = expand_shards(source)
        if not self.shards:
            raise FileNotFoundError(f"PretrainDataset: no shards / manifests match {source!r}")
        kinds = {_source_kind(s) for s in self.shards}
        if len(kinds) != 1:
            raise ValueError(f"PretrainDataset: mix of source kinds {sorted(kinds)}; use one")
        self.kind = kinds.pop()
        self.video_root = os.fspath(video_root)
        self.captions = load_captions(captions) if captions is not None else {}
        self.num_frames, self.size, self.context_length = num_frames, size, context_length
        self.mode, self.resize = mode, resize
        self.caption_field, self.subtitle_field = caption_field, subtitle_field
        self.require_caption = require_caption
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.timeout, self.threads = timeout, threads
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # raw records: (clip_id, path-or-name, video bytes or None, subtitle, caption or None)
    def _records(self) -> Iterator[tuple[str, str, bytes | None, str | None, str | None]]:
        slot, total = worker_slot()
        shards = list(self.shards)
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(shards)
        by_shard = self.kind == "tar" and len(shards) >= total
        for si, shard in enumerate(shards):
            if by_shard and si % total != slot:
                continue
            rows = iter_shard_samples(shard) if self.kind == "tar" else iter_manifest_rows(shard)
            for ri, row in enumerate(rows):
                if not by_shard and ri % total != slot:
                    continue
                yield (self._tar_record(shard, row) if self.kind == "tar" else self._manifest_record(shard, row))

    def _manifest_record(self, shard: str, row: dict[str, Any]) -> tuple[str, str, None, str | None, str | None]:
        clip_id = str(row.get("clip_id", ""))
        path = manifest_video_path(row, clip_id, self.video_root)
        sub = row.get(self.subtitle_field, row.get("text"))
        if isinstance(sub, list):
            sub = " ".join(map(str, sub))
        cap = row.get(self.caption_field) or self.captions.get(clip_id)
        return clip_id, path, None, sub, cap

    def _tar_record(self, shard: str, s: ShardSample) -> tuple[str, str, bytes | None, str | None, str | None]:
        name = f"{shard}/{s.key}.{s.video_ext or 'mp4'}"
        sub = s.text if s.text is not None else s.meta.get(self.subtitle_field)
        cap = (
            s.meta.get(self.caption_field) or self.captions.get(s.clip_id) or self.captions.get(os.path.basename(s.key))
        )
        return s.clip_id, name, s.video, sub, cap

    def _item(self, rec: tuple[str, str, bytes | None, str | None, str | None], rng: np.random.Generator):
        clip_id, path, data, sub, cap = rec
        if self.kind == "tar" and data is None:
            return _marker(path, "no video file in the shard for this key", clip_id=clip_id)
        if not sub:
            return _marker(path, "no subtitle", clip_id=clip_id)
        if not cap:
            if self.require_caption:
                return _marker(path, "no caption for this clip id", clip_id=clip_id)
            cap = sub
        try:
            vf = _read_frames(
                data if data is not None else path,
                num_frames=self.num_frames,
                size=self.size,
                mode=self.mode,
                resize=self.resize,
                rng=rng,
                timeout=self.timeout,
                threads=self.threads,
                with_middle=True,
                name=path,
            )
        except VideoDecodeError as e:
            return _marker(path, e.reason, clip_id=clip_id)
        frames = vf.frames
        if frames.shape[0] != self.num_frames:
            frames = frames.expand(self.num_frames, -1, -1, -1)
        toks = tokenize([str(sub), str(cap)], self.context_length)
        return {
            "video": normalize(frames),
            "frame": normalize(vf.middle),
            "subtitle": toks[0],
            "caption": toks[1],
            "clip_id": clip_id,
            "path": path,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, _ = worker_slot()
        rng = np.random.default_rng([self.seed, self.epoch, slot])
        buf: list[dict[str, Any]] = []
        for rec in self._records():
            item = self._item(rec, rng)
            if self.shuffle_buffer <= 1:
                yield item
                continue
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))


def _source_kind(path: str) -> str:
    p = path.lower()
    if p.endswith(".tar") or p.endswith(".tar.gz") or p.endswith(".tgz"):
        return "tar"
    if p.endswith(".jsonl") or p.endswith(".parquet") or p.endswith(".json"):
        return "manifest"
    raise ValueError(f"{path}: unknown source kind (expected .tar shards or a .jsonl / .parquet manifest)")
