"""WebDataset (video2dataset-style) tar shards: one reader and ONE sample parser for every consumer.

WHY one parser: the pretraining data set (``PretrainDataset``) and the captioner (``clipvip caption``) both read
the shards the corpus builder (``clipvip corpus``) writes, and the captions are joined to the training clips by
clip id. If the two read the clip id (or pick the video member) by different rules, captions silently stop
matching their clips. So both go through ``parse_shard_sample``.

A shard holds, per sample, members that share a key: ``{key}.mp4`` (or another video extension), ``{key}.json``
(metadata, with ``clip_id``) and ``{key}.txt`` (the subtitle).
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from clipvip.video import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class ShardSample:
    """One sample of a tar shard, parsed."""

    key: str  # the members' common name without extension (folder inside the tar included)
    clip_id: str  # the json's id field when set, else the key's base name
    video_ext: str | None  # extension of the video member ("mp4", ...), None when the sample has none
    video: bytes | None
    meta: dict[str, Any] = field(default_factory=dict)  # the json member; {} when absent or unreadable
    text: str | None = None  # the txt member (the subtitle), decoded; None when absent


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) groups of a WebDataset tar, streamed (members of one key are adjacent)."""
    key, group = None, {}
    with tarfile.open(os.fspath(path), mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            base = os.path.basename(name)
            if base.startswith("."):
                continue
            stem, _, ext = base.partition(".")
            k = os.path.join(os.path.dirname(name), stem)
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if k != key:
                if key is not None:
                    yield key, group
                key, group = k, {}
            group[ext.lower()] = data
    if key is not None:
        yield key, group


def parse_shard_sample(
    key: str, members: dict[str, bytes], id_key: str = "clip_id", media: Collection[str] = VIDEO_EXTENSIONS
) -> ShardSample:
    """The members of one key -> a ShardSample. An unreadable json counts as absent (the sample keeps its key as
    clip id) rather than failing the shard: a long job survives a bad sample. ``media``: the extensions (".mp4")
    that count as the sample's video member (the embed job also takes images)."""
    meta: Any = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
    if not isinstance(meta, dict):
        meta = {}
    cid = meta.get(id_key)
    clip_id = str(cid) if cid not in (None, "") else os.path.basename(key)
    ext = next((e for e in members if "." + e in media), None)
    text = members["txt"].decode("utf-8", "replace") if "txt" in members else None
    return ShardSample(key, clip_id, ext, members[ext] if ext else None, meta, text)


def iter_shard_samples(
    path: str | os.PathLike, id_key: str = "clip_id", media: Collection[str] = VIDEO_EXTENSIONS
) -> Iterator[ShardSample]:
    """Every sample of a tar shard, parsed, streamed (samples without a video member included: the caller decides
    whether that is a skip or a counted failure). An unreadable tar raises ValueError naming it."""
    try:
        for key, members in iter_tar_samples(path):
            yield parse_shard_sample(key, members, id_key, media)
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{os.fspath(path)}: not a readable tar shard ({e})") from None
