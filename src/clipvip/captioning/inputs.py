"""What to caption, and its middle frames: manifests or WebDataset shards -> this rank's clips -> frames.

``FrameStream`` runs in DataLoader workers. Manifest rows go to the rank ``owner_rank(clip_id)`` (independent of
row order, so every reader agrees); shards go whole to ranks. Shards are parsed by ``clipvip.data.shards``, the
parser the pretraining data set uses, so a caption is keyed by the same clip id as the clip it describes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".parquet")


def stable_hash(clip_id: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` is salted per process, so ranks would disagree)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode("utf-8"), digest_size=8).digest(), "big")


def owner_rank(clip_id: str, world_size: int) -> int:
    """The rank that captions ``clip_id`` for manifest inputs: independent of row order, so any reader agrees."""
    return stable_hash(clip_id) % world_size


@dataclass(frozen=True)
class ManifestOptions:
    """How to find the clip id and the video file in a manifest row.

    The default rule is ``PretrainDataset``'s (the row's ``video`` or ``path``, else ``{clip_id}.mp4``, relative to
    ``video_root``), so the captioner reads the very files the OCL data set trains on."""

    id_key: str = "clip_id"
    video_key: str | None = None  # None: "video", then "path", then "{clip_id}.mp4"
    video_root: str = "."  # relative paths are resolved against this
    video_template: str | None = None  # e.g. "{root}/{clip_id}.mp4"; fields of the row + {root}; wins over video_key


def iter_manifest(path: str | Path, options: ManifestOptions = ManifestOptions()) -> Iterator[tuple[str, str]]:
    """(clip_id, video path) for every row of a jsonl / parquet manifest, streamed."""
    from clipvip.data.datasets import iter_manifest_rows, manifest_video_path

    path = Path(path)
    root = options.video_root
    for n, row in enumerate(iter_manifest_rows(os.fspath(path)), 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n} is not an object but {type(row).__name__}")
        if row.get(options.id_key) in (None, ""):
            raise ValueError(f"{path}: row {n} has no {options.id_key!r} field (keys: {sorted(row)})")
        clip_id = str(row[options.id_key])
        if options.video_template:
            try:
                video = options.video_template.format(root=root, **row)
            except KeyError as e:
                raise ValueError(f"{path}: row {n}: the video template needs field {e}") from None
            except (IndexError, AttributeError, ValueError) as e:  # "{0}", "{a.b}", "{": not a usable template
                raise ValueError(f"--video-template {options.video_template!r}: {e}") from None
            yield clip_id, video  # the template places {root} itself
            continue
        if options.video_key and row.get(options.video_key) in (None, ""):
            raise ValueError(f"{path}: row {n} has no {options.video_key!r} field (keys: {sorted(row)})")
        yield clip_id, manifest_video_path(row, clip_id, root, options.video_key)


@dataclass(frozen=True)
class CaptionInput:
    """What to caption: one or more manifests, or a list of tar shards (never both)."""

    manifests: tuple[str, ...] = ()
    shards: tuple[str, ...] = ()
    manifest_options: ManifestOptions = ManifestOptions()

    @classmethod
    def resolve(cls, specs: Sequence[str], manifest_options: ManifestOptions = ManifestOptions()) -> CaptionInput:
        """Manifest files, tar files, folders of tars, globs or ``{a..b}`` patterns -> a sorted, checked input."""
        from clipvip.data.datasets import expand_shards

        manifests, shards = [], []
        for spec in specs:
            paths: list[str] = []
            if os.path.isdir(spec):
                paths = sorted(str(p) for p in Path(spec).glob("*.tar"))
                if not paths:
                    raise FileNotFoundError(f"{spec}: folder holds no .tar shards")
            else:
                paths = expand_shards(spec)
                if not paths:
                    raise FileNotFoundError(f"{spec}: no file matches")
                for p in paths:
                    if not os.path.exists(p):
                        raise FileNotFoundError(f"{p}: no such manifest or shard")
            for p in paths:
                if p.endswith(".tar") or p.endswith(".tar.gz") or p.endswith(".tgz"):
                    shards.append(p)
                elif p.endswith(MANIFEST_SUFFIXES):
                    manifests.append(p)
                else:
                    raise ValueError(f"{p}: neither a manifest ({', '.join(MANIFEST_SUFFIXES)}) nor a .tar shard")
        if manifests and shards:
            raise ValueError("give either manifests or tar shards, not both")
        return cls(tuple(manifests), tuple(sorted(set(shards))), manifest_options)

    @property
    def is_sharded(self) -> bool:
        return bool(self.shards)

    def belongs_to(self, clip_id: str, rank: int, world_size: int) -> bool | None:
        """Whether ``clip_id`` is this rank's work; None when that is only known by reading the shards."""
        return None if self.is_sharded else owner_rank(clip_id, world_size) == rank

    def rank_shards(self, rank: int, world_size: int) -> list[str]:
        """Shards are split whole between ranks (rank r takes shards r, r+W, ...) so each rank reads only its own."""
        return list(self.shards[rank::world_size])


# ----------------------------------------------------------------------------------------------------------------
# Frame stream (runs in DataLoader workers)


@dataclass
class FrameItem:
    """One clip's middle frame (uint8 [3, H, W]) or the reason it could not be read."""

    clip_id: str
    source: str
    frame: torch.Tensor | None = None
    error: str | None = None


class FrameStream(torch.utils.data.IterableDataset):
    """This rank's clips that are not done yet -> FrameItem, split between DataLoader workers.

    Manifest rows go to rank ``owner_rank(clip_id)``, then to worker ``(hash // world) % workers``; shards go whole
    to ranks, then whole to workers. Read errors become FrameItems with ``error`` set (the job goes on). The middle
    frame is squashed to ``frame_size`` square: the captioner's processor resizes it again anyway."""

    def __init__(self, inputs: CaptionInput, rank: int, world_size: int, skip: set[str], frame_size: int) -> None:
        super().__init__()
        self.inputs, self.rank, self.world_size = inputs, rank, world_size
        self.skip, self.frame_size = skip, frame_size

    def __iter__(self) -> Iterator[FrameItem]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.inputs.is_sharded:
            yield from self._iter_shards(self.inputs.rank_shards(self.rank, self.world_size)[worker::num_workers])
        else:
            yield from self._iter_manifests(worker, num_workers)

    def _read(self, clip_id: str, video: str | bytes, source: str) -> FrameItem:
        """``video``: a path, or a shard member's bytes (decoded in memory; ``source`` names it in errors)."""
        from clipvip.video import read_middle_frame

        try:
            frame = read_middle_frame(video, size=self.frame_size, resize="squash", name=source)
        except Exception as e:  # a long job survives any bad sample; the error is listed in the failures file
            return FrameItem(clip_id, source, error=f"{type(e).__name__}: {e}")
        return FrameItem(clip_id, source, frame=frame[0])  # read_middle_frame: [1, 3, H, W]

    def _iter_manifests(self, worker: int, num_workers: int) -> Iterator[FrameItem]:
        seen: set[str] = set()  # a clip listed twice goes to the same worker: caption it once
        for manifest in self.inputs.manifests:
            for clip_id, path in iter_manifest(manifest, self.inputs.manifest_options):
                h = stable_hash(clip_id)
                if h % self.world_size != self.rank or (h // self.world_size) % num_workers != worker:
                    continue
                if clip_id in self.skip or clip_id in seen:
                    continue
                seen.add(clip_id)
                yield self._read(clip_id, path, path)

    def _iter_shards(self, shards: Iterable[str]) -> Iterator[FrameItem]:
        from clipvip.data.shards import iter_shard_samples

        seen: set[str] = set()
        for shard in shards:
            try:
                for s in iter_shard_samples(shard, self.inputs.manifest_options.id_key):
                    if s.video is None:
                        log.warning("%s: sample %r has no video member; skipped", shard, s.key)
                        continue
                    if s.clip_id in self.skip or s.clip_id in seen:
                        continue
                    seen.add(s.clip_id)
                    yield self._read(s.clip_id, s.video, f"{shard}:{s.clip_id}.{s.video_ext}")
            except ValueError as e:  # an unreadable shard is reported once and the job moves on
                yield FrameItem(clip_id=f"<shard {shard}>", source=shard, error=str(e))
