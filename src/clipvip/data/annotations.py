"""Annotation files of the retrieval benchmarks -> ``list[Sample]``, and explicit video path resolution.

One parser per *published* format (not per data set class): the official CLIP-ViP jsonl, MSR-VTT's json / 1k-A
csv / split id lists, DiDeMo and ActivityNet Captions (paragraph retrieval: a video's sentences joined into one
text), LSMDC16's tab-separated files and MSVD's captions json + split lists. Paths are never guessed silently:
``resolve_videos`` applies a template (official defaults in ``DEFAULT_TEMPLATES``) and reports every missing
file in ONE summary instead of one exception per sample.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clipvip.io import JsonlError, read_jsonl_numbered
from clipvip.video.read import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One video and all its texts. ``file``: the file name the annotation itself gives, if any (DiDeMo)."""

    video_id: str
    texts: list[str]
    file: str | None = None


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file (and line) and what was expected."""


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _texts(value: object, where: str) -> list[str]:
    """A text or a list of texts, as found in the file; anything else (null, a number, a nested object) is an
    ``AnnotationError`` naming ``where`` rather than a caption like "None" or one made of single characters."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(t, str) for t in items):
        raise AnnotationError(f"{where}: expected a text or a list of texts, got {json.dumps(value)[:80]}")
    return items


def _video_id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise AnnotationError(f"{where}: expected a video id (text or integer), got {json.dumps(value)[:80]}")
    return str(value).strip()


def _paragraph(sentences: Iterable[str]) -> str:
    return _clean(" ".join(s for s in (_clean(x) for x in sentences) if s))


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e


def _merge(pairs: Iterable[tuple[str, str]]) -> list[Sample]:
    """(video_id, text) pairs -> samples in first-seen order, texts in file order."""
    by_id: dict[str, Sample] = {}
    for vid, text in pairs:
        by_id.setdefault(vid, Sample(vid, [])).texts.append(text)
    return list(by_id.values())


# ---------------------------------------------------------------------------------------------------- formats


def _load_jsonl(path: Path) -> list[Sample]:
    """One object per line (a .json list also works), in either of two layouts:

    - official CLIP-ViP: ``{"clip_id", "text": str | [str]}``, video ``<clip_id>.mp4``;
    - your own data: ``{"video": "clips/a.mp4", "caption": str | [str]}`` (``text`` / ``captions`` also read;
      ``clip_id`` optional, default the video path), the path relative to the video root or absolute.
    Rows of one video are merged, texts in file order."""
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        if not isinstance(data, list):
            raise AnnotationError(f"{path}: expected a JSON list of {{clip_id, text}} objects")
        rows = list(enumerate(data, 1))
    else:
        try:
            rows = list(read_jsonl_numbered(path))
        except JsonlError as e:
            raise AnnotationError(str(e)) from None
    by_id: dict[str, Sample] = {}
    for n, row in rows:
        text_key = next((k for k in ("text", "caption", "captions") if isinstance(row, dict) and k in row), None)
        if not isinstance(row, dict) or text_key is None or ("clip_id" not in row and "video" not in row):
            raise AnnotationError(
                f"{path}:{n}: expected an object with 'video' and 'caption' (or the official 'clip_id' and 'text')"
            )
        if row.get("clip_id") not in (None, ""):
            vid = _video_id(row["clip_id"], f"{path}:{n}: clip_id")
        else:
            vid = _video_id(row["video"], f"{path}:{n}: video")
        file = _video_id(row["video"], f"{path}:{n}: video") if "video" in row else f"{vid}.mp4"
        texts = _texts(row[text_key], f"{path}:{n}: {text_key}")
        by_id.setdefault(vid, Sample(vid, [], file)).texts.extend(_clean(t) for t in texts)
    return list(by_id.values())


def _load_msrvtt(path: Path, captions: str | os.PathLike | None) -> list[Sample]:
    """MSRVTT_data.json (all videos), the 1k-A csv ``key,vid_key,video_id,sentence`` (captions inline), or a split
    id list csv (header ``video_id``: 9k / 7k train) whose captions come from ``captions`` (MSRVTT_data.json)."""
    if path.suffix.lower() == ".json":
        return _msrvtt_json(path, None)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = list(reader)
    if "video_id" not in fields:
        raise AnnotationError(f"{path}: MSR-VTT csv needs a 'video_id' column, found {fields}")
    for n, r in enumerate(rows, 2):
        if None in r.values():  # csv.DictReader fills a short row's missing columns with None
            raise AnnotationError(f"{path}:{n}: expected {len(fields)} columns {fields}, got a shorter row")
    if "sentence" in fields:
        return _merge((_video_id(r["video_id"], f"{path}:{n}"), _clean(r["sentence"])) for n, r in enumerate(rows, 2))
    if captions is None:
        raise AnnotationError(
            f"{path}: a split id list has no captions: pass captions='MSRVTT_data.json' to load_annotations"
        )
    ids = [r["video_id"].strip() for r in rows if r["video_id"].strip()]
    return _msrvtt_json(Path(captions), ids)


def _msrvtt_json(path: Path, ids: Sequence[str] | None) -> list[Sample]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise AnnotationError(f"{path}: expected MSRVTT_data.json with a 'sentences' list")
    by_id: dict[str, list[str]] = {}
    for n, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            raise AnnotationError(f"{path}: sentences[{n}] is not a {{video_id, caption}} object")
        vid = _video_id(s["video_id"], f"{path}: sentences[{n}].video_id")
        by_id.setdefault(vid, []).extend(_clean(t) for t in _texts(s["caption"], f"{path}: sentences[{n}].caption"))
    order = ids if ids is not None else list(by_id)
    missing = [v for v in order if v not in by_id]
    if missing:
        raise AnnotationError(f"{path}: {len(missing)} listed videos have no captions, e.g. {missing[:5]}")
    return [Sample(v, by_id[v]) for v in order]


def _video_stem(name: str) -> str:
    """The video's id in a DiDeMo file name ``<flickr id>.<ext>``: everything before the LAST dot, whatever the
    extension (DiDeMo also has ``.3g2`` and bare ``X.`` names); a name without a dot is its own id."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _preferred_file(names: Sequence[str]) -> str:
    """Which of a video's annotated file names ``Sample.file`` keeps: the first in sorted order that has a known
    video extension (else the first in sorted order). Sorted, because that is the order in which a
    ``{video_id}.*`` template picks among existing files, so ``{file}`` and ``.*`` agree when both copies exist."""
    names = sorted(names)
    known = [n for n in names if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS]
    return (known or names)[0]


def _load_didemo(path: Path) -> list[Sample]:
    """DiDeMo ``*_data.json``: one paragraph per video = ALL its descriptions in file order, joined (the
    CLIP4Clip / CLIP-ViP paragraph-to-video protocol). ``video_id`` is the file name without its extension, so a
    video listed under two containers (``X.mov`` and ``X.mp4``: 29 such pairs in val, 33 in test) is ONE sample,
    as in the standard split sizes (1,065 val / 1,004 test videos). ``file``: see ``_preferred_file``."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a DiDeMo list of {{video, description, times, ...}}")
    grouped: dict[str, list[str]] = {}
    names: dict[str, set[str]] = {}
    for n, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("video"), str) or "description" not in row:
            raise AnnotationError(f"{path}: entry {n} is not a {{video: str, description: str, ...}} object")
        if not isinstance(row["description"], str):
            raise AnnotationError(f"{path}: entry {n} ({row['video']!r}) has a non-text description")
        vid = _video_stem(row["video"])
        grouped.setdefault(vid, []).append(row["description"])
        names.setdefault(vid, set()).add(row["video"])
    return [Sample(v, [_paragraph(d)], file=_preferred_file(list(names[v]))) for v, d in grouped.items()]


def _load_activitynet(path: Path) -> list[Sample]:
    """ActivityNet Captions ``{"v_<id>": {duration, timestamps, sentences}}``: one paragraph per video, sentences
    in their (temporal) order, whitespace normalised. ``video_id`` keeps the ``v_`` prefix, as the files do."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an ActivityNet Captions dict {{video_id: {{sentences: ...}}}}")
    out = []
    for vid, entry in data.items():
        if not isinstance(entry, dict) or "sentences" not in entry:
            raise AnnotationError(f"{path}: entry {vid!r} has no 'sentences'")
        sentences = entry["sentences"]
        if not isinstance(sentences, list):
            raise AnnotationError(f"{path}: entry {vid!r}: 'sentences' is not a list")
        out.append(Sample(vid, [_paragraph(_texts(sentences, f"{path}: entry {vid!r}: sentences"))]))
    return out


def _load_lsmdc(path: Path) -> list[Sample]:
    """LSMDC16 tab-separated ``clip_id, start, end, start_aligned, end_aligned, sentence``; a clip id that occurs
    on several lines gets all its sentences."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise AnnotationError(f"{path}:{n}: expected tab-separated clip_id ... sentence, got {line[:80]!r}")
            pairs.append((cols[0].strip(), _clean(cols[-1])))
    return _merge(pairs)


def _load_msvd(path: Path, split_list: str | os.PathLike | None) -> list[Sample]:
    """MSVD captions json ``{video_id: [caption, ...]}``, restricted to (and ordered as) ``split_list``."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an MSVD captions dict {{video_id: [captions]}}")
    if split_list is None:
        ids = list(data)
    else:
        ids = Path(split_list).read_text(encoding="utf-8").split()
        missing = [v for v in ids if v not in data]
        if missing:
            raise AnnotationError(f"{split_list}: {len(missing)} ids not in {path}, e.g. {missing[:5]}")
    return [Sample(v, [_clean(c) for c in _texts(data[v], f"{path}: {v!r}")]) for v in ids]


@dataclass(frozen=True)
class AnnotationReader:
    """One published annotation format: its parser, the options it takes, and where its videos live by default.

    WHY a registry: a new format is ONE entry here (a parser and a template), not edits to a name list, a
    template table and a dispatch chain. Official file layouts: CLIP-ViP's id2path is ``<root>/<id>.mp4``, LSMDC
    ``<root>/<id>.avi``, MSVD ships YouTubeClips as .avi; a template ending in ``.*`` takes the first existing file
    with any video extension (DiDeMo and ActivityNet downloads keep their original, mixed extensions)."""

    name: str
    parse: Callable[..., list[Sample]]
    template: str
    options: tuple[str, ...] = ()  # keyword options of ``parse`` (``captions``, ``split_list``)


READERS: dict[str, AnnotationReader] = {
    r.name: r
    for r in (
        AnnotationReader("jsonl", _load_jsonl, "{root}/{file}"),  # a row's "video" path, else "<clip_id>.mp4"
        AnnotationReader("msrvtt", _load_msrvtt, "{root}/{video_id}.mp4", ("captions",)),
        AnnotationReader("didemo", _load_didemo, "{root}/{video_id}.*"),
        AnnotationReader("activitynet", _load_activitynet, "{root}/{video_id}.*"),
        AnnotationReader("lsmdc", _load_lsmdc, "{root}/{video_id}.avi"),
        AnnotationReader("msvd", _load_msvd, "{root}/{video_id}.avi", ("split_list",)),
    )
}
FORMATS: tuple[str, ...] = tuple(READERS)
AnnotationFormat = str  # one of FORMATS
DEFAULT_TEMPLATES: dict[str, str] = {name: r.template for name, r in READERS.items()}


def load_annotations(
    path: str | os.PathLike,
    fmt: AnnotationFormat,
    *,
    captions: str | os.PathLike | None = None,
    split_list: str | os.PathLike | None = None,
) -> list[Sample]:
    """Read a benchmark annotation file into samples (one per video; texts whitespace-normalised).

    * ``jsonl``: official CLIP-ViP ``{"clip_id", "text": str | [str]}`` lines (or a .json list of them), or your
      own ``{"video": path, "caption": str | [str]}`` lines.
    * ``msrvtt``: ``MSRVTT_data.json``, the 1k-A csv (``key,vid_key,video_id,sentence``), or a split id list csv
      with ``captions="MSRVTT_data.json"``.
    * ``didemo`` / ``activitynet``: one paragraph (sentences joined) per video.
    * ``lsmdc``: LSMDC16 tsv. ``msvd``: captions json with ``split_list="MSVD_test_list.txt"`` (None = all).
    """
    path = Path(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown annotation format {fmt!r}; expected one of {FORMATS}")
    given: dict[str, Any] = {k: v for k, v in (("captions", captions), ("split_list", split_list)) if v is not None}
    unused = sorted(set(given) - set(reader.options))
    if unused:
        raise ValueError(f"annotation format {fmt!r} takes no {' or '.join(unused)} option")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    samples = reader.parse(path, **{k: given.get(k) for k in reader.options})
    seen: set[str] = set()
    repeated = [s.video_id for s in samples if s.video_id in seen or seen.add(s.video_id)]
    if repeated:  # only a split list can do this (parsers merge by id): two rows would share one video file
        raise AnnotationError(f"{path}: {len(repeated)} video ids listed twice, e.g. {repeated[:5]}")
    empty = [s.video_id for s in samples if not s.texts or not all(s.texts)]
    if empty:
        raise AnnotationError(f"{path}: {len(empty)} videos with an empty text, e.g. {empty[:5]}")
    return samples


# ------------------------------------------------------------------------------------------------ video paths


def video_path(sample: Sample, template: str, root: str | os.PathLike = ".") -> str:
    """Fill a template. Fields: ``root``, ``video_id``, ``file`` (the annotated file name, else the id) and
    ``movie`` (LSMDC's movie folder: the id up to its last ``_``). A trailing ``.*`` picks the annotated ``file``
    when it exists there, else the first existing file (sorted) with any video extension."""
    fields = {
        "root": os.fspath(root),
        "video_id": sample.video_id,
        "file": sample.file or sample.video_id,
        "movie": sample.video_id.rsplit("_", 1)[0],
    }
    try:
        path = template.format(**fields)
        if template.startswith("{root}/") and os.path.isabs(rest := template[len("{root}/") :].format(**fields)):
            path = rest  # an absolute path in the annotation ignores the root, as os.path.join does
    except KeyError as e:
        raise ValueError(f"video path template {template!r} uses unknown field {e}; known: {sorted(fields)}") from e
    except (IndexError, AttributeError, ValueError) as e:  # "{0}", "{root.x}", "{": not a usable template
        raise ValueError(f"video path template {template!r}: {e}; fields are {sorted(fields)}") from None
    if path.endswith(".*"):
        base = path[:-2]
        # The annotated file itself first (DiDeMo also names ``X.3g2`` and bare ``X.`` files), then any file with
        # a known video extension, in sorted order.
        if sample.file and _video_stem(sample.file) == os.path.basename(base):
            annotated = os.path.join(os.path.dirname(base), sample.file)
            if os.path.isfile(annotated):
                return annotated
        found = sorted(p for p in glob.glob(glob.escape(base) + ".*") if Path(p).suffix.lower() in VIDEO_EXTENSIONS)
        if found:
            return found[0]
        if os.path.isfile(base + "."):  # DiDeMo's extension-less names ("X.")
            return base + "."
        return base + ".mp4"  # reported as missing by resolve_videos
    return path


@dataclass
class ResolvedVideos:
    samples: list[Sample]
    paths: list[str]
    missing: list[tuple[str, str]]  # (video_id, path tried)

    def summary(self) -> str:
        if not self.missing:
            return f"all {len(self.paths)} videos found"
        eg = ", ".join(p for _, p in self.missing[:3])
        return f"{len(self.missing)} of {len(self.missing) + len(self.paths)} videos missing (e.g. {eg})"


def resolve_videos(
    samples: Sequence[Sample],
    root: str | os.PathLike,
    template: str | None = None,
    fmt: str | None = None,
    on_missing: Literal["skip", "error"] = "skip",
) -> ResolvedVideos:
    """Map samples to files; missing files are dropped (``skip``, one logged summary) or raise ONE error
    listing them (``error``). ``template`` defaults to ``DEFAULT_TEMPLATES[fmt]``."""
    if template is None:
        if fmt is None:
            raise ValueError("give a path template (e.g. '{root}/{video_id}.mp4') or an annotation format")
        template = DEFAULT_TEMPLATES[fmt]
    kept, paths, missing = [], [], []
    for s in samples:
        p = video_path(s, template, root)
        if os.path.isfile(p) or "://" in p:
            kept.append(s)
            paths.append(p)
        else:
            missing.append((s.video_id, p))
    out = ResolvedVideos(kept, paths, missing)
    if missing:
        if on_missing == "error":
            raise FileNotFoundError(f"template {template!r}: {out.summary()}")
        log.warning("template %r: %s", template, out.summary())
    return out
