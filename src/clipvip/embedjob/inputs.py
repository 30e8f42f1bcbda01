"""What ``clipvip embed`` reads, cut into parts: a folder, a manifest, or WebDataset shards; local or fsspec URLs.

WHY parts are planned here, before any decoding: the job scheduler (``clipvip.jobs``) and the Ray Data pipeline
both need the list of parts up front, and every engine must cut the input the same way so that part N holds the
same videos whoever runs it (that is what makes outputs identical across engines and reruns resumable).

- A folder or a manifest is a list of files, cut every ``rows_per_part`` entries (the list sits in the driver's
  memory: fine for millions of files; for 100M use shards).
- A WebDataset shard (``{key}.mp4`` + ``{key}.json`` / ``{key}.txt``, as video2dataset writes it) is one part;
  its samples are only known by reading it, so a shard is streamed by whoever runs its part.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipvip.data.shards import ShardSample, iter_shard_samples

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PATH_COLUMNS = ("path", "video", "url", "file")
CAPTION_COLUMNS = ("caption", "subtitle", "text", "txt")


@dataclass(frozen=True)
class Sample:
    """One input video: its key, where it came from, its caption/subtitle if the input has one, and its bytes when
    they were read out of a shard (else None: the decoder opens ``path``)."""

    key: str
    path: str
    caption: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class PartSource:
    """The input of one part: a slice of a file list, or one shard."""

    samples: tuple[Sample, ...] = ()
    shard: str | None = None


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _glob_videos(root: str) -> list[str]:
    """Video files under a folder or an fsspec folder URL, sorted."""
    from clipvip.index.build import find_videos
    from clipvip.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    if not _is_url(root):
        return [str(p) for p in find_videos(root)]
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    exts = tuple(VIDEO_EXTENSIONS) + tuple(IMAGE_EXTENSIONS)
    files = sorted(f for f in fs.find(base) if f.lower().endswith(exts) and not Path(f).name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{root}: no video files")
    return [fs.unstrip_protocol(f) for f in files]


def _manifest_rows(path: str) -> list[dict[str, Any]]:
    from clipvip.data.datasets import iter_manifest_rows

    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return list(iter_manifest_rows(path))


def _manifest_samples(path: str) -> list[Sample]:
    rows = _manifest_rows(path)
    if not rows:
        raise ValueError(f"{path}: the manifest has no rows")
    col = next((c for c in PATH_COLUMNS if c in rows[0]), None)
    if col is None:
        raise ValueError(f"{path}: no path column (expected one of {', '.join(PATH_COLUMNS)}; got {sorted(rows[0])})")
    cap = next((c for c in CAPTION_COLUMNS if c in rows[0]), None)
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for i, r in enumerate(rows):
        p = str(r[col] or "")
        if not p:
            raise ValueError(f"{path}: row {i + 1} has an empty {col!r}")
        if not (os.path.isabs(p) or "://" in p):
            p = os.path.join(base, p)
        key = str(r.get("key") or r.get("clip_id") or r.get("id") or Path(p).stem)
        caption = r.get(cap) if cap else None
        out.append(Sample(key, p, None if caption is None else str(caption)))
    return out


def _shards(spec: str) -> list[str]:
    from clipvip.data.datasets import expand_shards

    if os.path.isdir(spec):
        return sorted(str(p) for p in Path(spec).iterdir() if p.name.endswith(SHARD_SUFFIXES))
    return expand_shards(spec)


def plan_parts(specs: Sequence[str], rows_per_part: int = 1000) -> list[PartSource]:
    """Cut the input into parts (see the module docstring). ``specs``: folders, video files, manifests, or
    shards/globs."""
    if rows_per_part < 1:
        raise ValueError(f"rows_per_part must be >= 1, got {rows_per_part}")
    if not specs:
        raise ValueError("no input given")
    shards: list[str] = []
    samples: list[Sample] = []
    for spec in specs:
        spec = str(spec)
        if spec.endswith(MANIFEST_SUFFIXES):
            if not _is_url(spec) and not os.path.isfile(spec):
                raise FileNotFoundError(f"{spec}: no such manifest")
            samples += _manifest_samples(spec)
        elif spec.endswith(SHARD_SUFFIXES) or any(c in spec for c in "*?{") or _has_shards(spec):
            found = _shards(spec)
            if not found:
                raise FileNotFoundError(f"{spec}: no .tar shards")
            missing = [s for s in found if not _is_url(s) and not os.path.isfile(s)]
            if missing:
                raise FileNotFoundError(f"{missing[0]}: no such shard")
            shards += found
        elif _is_url(spec) or os.path.isdir(spec):
            samples += [Sample(Path(p).stem, p) for p in _glob_videos(spec)]
        elif os.path.isfile(spec):  # one video file
            samples.append(Sample(Path(spec).stem, os.path.abspath(spec)))
        else:
            raise FileNotFoundError(f"{spec}: not a folder, a manifest ({', '.join(MANIFEST_SUFFIXES)}) or shards")
    if shards and samples:
        raise ValueError("give either shards or folders/manifests, not both")
    if shards:
        return [PartSource(shard=s) for s in shards]
    if not samples:
        raise FileNotFoundError(f"{', '.join(map(str, specs))}: no videos found")
    return [PartSource(tuple(samples[i : i + rows_per_part])) for i in range(0, len(samples), rows_per_part)]


def _has_shards(spec: str) -> bool:
    return os.path.isdir(spec) and any(p.name.endswith(SHARD_SUFFIXES) for p in Path(spec).iterdir())


def _caption(sample: ShardSample) -> str | None:
    """The sample's text member, else the first caption-like field of its json."""
    if sample.text is not None:
        return sample.text.strip()
    return next((sample.meta[c] for c in CAPTION_COLUMNS if isinstance(sample.meta.get(c), str)), None)


def iter_samples(source: PartSource) -> Iterator[Sample]:
    """The samples of one part, in a fixed order. A shard is streamed; a sample without a video member becomes a
    sample with no data, which the decoder reports as a failure (named, never fatal)."""
    if source.shard is None:
        yield from source.samples
        return
    from clipvip.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    media = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    shard = source.shard
    if _is_url(shard):  # fsspec URL: stream it through a local temporary copy (tarfile needs a path here)
        import tempfile

        import fsspec

        with tempfile.NamedTemporaryFile(suffix=".tar") as tmp, fsspec.open(shard, "rb") as f:
            while block := f.read(1 << 24):
                tmp.write(block)
            tmp.flush()
            yield from _shard_samples(tmp.name, shard, media)
        return
    yield from _shard_samples(shard, shard, media)


def _shard_samples(local: str, name: str, media: Collection[str]) -> Iterator[Sample]:
    """The shard's samples through the one tar-sample parser (``clipvip.data.shards``), named by ``name``."""
    try:
        for s in iter_shard_samples(local, media=media):
            yield Sample(s.key, f"{name}#{s.key}.{s.video_ext or 'mp4'}", _caption(s), s.video or b"")
    except ValueError as e:  # an unreadable tar: named as the user gave it, not by its local copy
        raise ValueError(str(e).replace(local, name)) from None
