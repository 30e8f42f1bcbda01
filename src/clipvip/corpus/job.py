"""The corpus job: raw videos (or HD-VILA-100M spans) -> WebDataset shards in video2dataset's layout.

Parts are shards: the sorted inputs are cut into groups of ``videos_per_shard`` and part ``i`` writes
``shard-{i:05d}.tar`` (``{key}.mp4`` + ``{key}.json`` + ``{key}.txt`` per clip), ``shard-{i:05d}.parquet`` (its
manifest rows) and, last, ``shard-{i:05d}.stats.json`` (clips, seconds, failures). Each file is written atomically
and the stats file marks the shard done, so :func:`clipvip.jobs.run_job` skips finished shards on a rerun and runs
the rest on one process, on torchrun / Slurm rank slices or on Ray. A video that cannot be opened, a clip that
cannot be cut, a subtitle file that cannot be parsed: each is named in the shard's stats and skipped.
``corpus.json`` records the inputs and options; a rerun with different ones is refused (the shard numbering
would no longer match). :func:`merge_manifests` writes ``manifest.parquet`` once every shard is done.

Subtitles of a video, first found wins: a sidecar ``.srt``/``.vtt`` (:func:`~clipvip.corpus.subtitles.find_sidecars`),
an embedded text subtitle stream, then ASR (only with an :class:`~clipvip.corpus.asr.ASRConfig`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipvip.corpus.asr import ASRConfig, ASRError, Transcriber
from clipvip.corpus.clips import Clip, ClipRule, ClipStats, cues_in_span, make_clips
from clipvip.corpus.cut import CutError, CutOptions, VideoCutter
from clipvip.corpus.hdvila import Span
from clipvip.corpus.subtitles import Cue, SubtitleError, find_sidecars, read_embedded, read_subtitle_file
from clipvip.io import atomic_path, atomic_save_parquet, atomic_write_json

MANIFEST_COLUMNS = (
    "clip_id", "key", "shard", "video_id", "source", "start", "end", "subtitle", "asr_confidence",
    "subtitle_source", "cut", "frames", "bytes",
)  # fmt: skip


@dataclass(frozen=True)
class VideoTask:
    """One source video; ``spans``: given clips (HD-VILA metadata) instead of the subtitle rule."""

    path: str
    video_id: str
    spans: tuple[Span, ...] | None = None


@dataclass(frozen=True)
class CorpusConfig:
    out: str
    clip_rule: ClipRule = ClipRule()
    cut: CutOptions = CutOptions()
    videos_per_shard: int = 100
    asr: ASRConfig | None = None
    embedded: bool = True  # look for subtitle streams inside the container

    def __post_init__(self) -> None:
        if self.videos_per_shard < 1:
            raise ValueError(f"videos_per_shard must be >= 1, got {self.videos_per_shard}")


def video_tasks(paths: Sequence[str | os.PathLike]) -> list[VideoTask]:
    """Sorted, de-duplicated tasks; the video id is the file stem, plus a short path hash when stems collide
    (clip ids must be unique across the corpus: captions are joined on them)."""
    files = sorted({os.path.abspath(os.fspath(p)) for p in paths})
    stems: dict[str, int] = {}
    for f in files:
        stems[Path(f).stem] = stems.get(Path(f).stem, 0) + 1
    out = []
    for f in files:
        stem = Path(f).stem
        vid = stem if stems[stem] == 1 else f"{stem}-{hashlib.blake2b(f.encode(), digest_size=4).hexdigest()}"
        out.append(VideoTask(f, vid))
    return out


@dataclass
class _ShardStats:
    shard: str
    videos: int = 0
    videos_with_clips: int = 0
    clips: int = 0
    seconds: float = 0.0
    bytes: int = 0
    copy: int = 0
    reencode: int = 0
    sentences: int = 0
    dropped_short: int = 0
    dropped_long: int = 0
    subtitle_sources: dict[str, int] = field(default_factory=dict)
    no_subtitles: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def fail(self, path: str, reason: str) -> None:
        self.failed.append({"path": path, "reason": reason})


class CorpusJob:
    """A :class:`clipvip.jobs.PartsJob`: part ``i`` = shard ``i``. Picklable (Ray); the ASR model is built lazily
    in whichever process runs a part."""

    def __init__(self, tasks: Sequence[VideoTask], config: CorpusConfig) -> None:
        if not tasks:
            raise ValueError("no input videos")
        self.tasks, self.config = list(tasks), config
        self.out = Path(config.out)
        n = config.videos_per_shard
        self.num_parts = (len(self.tasks) + n - 1) // n
        self._transcriber: Transcriber | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transcriber": None}

    # ---------------------------------------------------------------------------------------------- layout

    def shard_path(self, part: int) -> Path:
        return self.out / f"shard-{part:05d}.tar"

    def stats_path(self, part: int) -> Path:
        return self.out / f"shard-{part:05d}.stats.json"

    def manifest_path(self, part: int) -> Path:
        return self.out / f"shard-{part:05d}.parquet"

    def prepare(self) -> None:
        """Create ``out`` and write / check ``corpus.json`` (same inputs and options as any earlier run)."""
        self.out.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        for t in self.tasks:  # a digest, not the list: 3M paths would make a 300 MB file
            h.update(f"{t.path}\t{t.video_id}\t{t.spans!r}\n".encode())
        desc = {
            "videos": len(self.tasks),
            "inputs_sha256": h.hexdigest(),
            "first_video": self.tasks[0].path,
            "spans": any(t.spans is not None for t in self.tasks),
            "videos_per_shard": self.config.videos_per_shard,
            "clip_rule": asdict(self.config.clip_rule),
            "cut": asdict(self.config.cut),
            "asr": asdict(self.config.asr) if self.config.asr else None,
            "embedded": self.config.embedded,
        }
        path = self.out / "corpus.json"
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: unreadable ({e}); remove it or use a new --out") from None
            if old != desc:
                diff = sorted(k for k in desc if old.get(k) != desc[k])
                raise ValueError(
                    f"{path}: this folder holds a corpus built with different {', '.join(diff)}; "
                    "rerun with the same inputs and options, or use a new --out"
                )
        else:
            atomic_write_json(path, desc)

    def is_done(self, part: int) -> bool:
        return self.stats_path(part).exists() and self.shard_path(part).exists()

    # ---------------------------------------------------------------------------------------------- work

    def run_part(self, part: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        n = self.config.videos_per_shard
        tasks = self.tasks[part * n : (part + 1) * n]
        stats = _ShardStats(shard=self.shard_path(part).name)
        rows: list[dict[str, Any]] = []
        with atomic_path(self.shard_path(part)) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for task in tasks:
                stats.videos += 1
                n_before = stats.clips
                self._video(task, part, tar, rows, stats)
                stats.videos_with_clips += stats.clips > n_before
        stats.wall_seconds = time.perf_counter() - t0
        import pyarrow as pa

        table = pa.table({c: [r[c] for r in rows] for c in MANIFEST_COLUMNS}, schema=_manifest_schema())
        atomic_save_parquet(self.manifest_path(part), table)
        out = asdict(stats)
        atomic_write_json(self.stats_path(part), out)  # last: marks the shard done
        return out

    def _cues(self, task: VideoTask, stats: _ShardStats) -> tuple[list[Cue], str | None]:
        for sidecar in find_sidecars(task.path):
            try:
                cues = read_subtitle_file(sidecar)
            except SubtitleError as e:
                stats.fail(str(sidecar), str(e))
                continue
            if cues:
                return cues, f"sidecar:{sidecar.suffix.lstrip('.')}"
        if self.config.embedded:
            try:
                cues = read_embedded(task.path)
            except SubtitleError as e:
                cues = None
                stats.fail(task.path, str(e))
            except Exception as e:  # noqa: BLE001 - a broken stream in PyAV can raise anything
                cues = None
                stats.fail(task.path, f"embedded subtitles unreadable ({type(e).__name__}: {e})")
            if cues:
                return cues, "embedded"
        if self.config.asr is not None:
            if self._transcriber is None:
                self._transcriber = Transcriber(self.config.asr)
            try:
                cues = self._transcriber.transcribe(task.path)
            except ASRError as e:
                stats.fail(task.path, str(e))
                cues = []
            if cues:
                return cues, "asr"
        return [], None

    def _clips(self, task: VideoTask, cues: list[Cue], stats: _ShardStats) -> list[tuple[str, Clip]]:
        if task.spans is not None:
            out = []
            for s in task.spans:
                inside = cues_in_span(cues, s.start, s.end)
                confs = [c.confidence for c in inside if c.confidence is not None]
                text = " ".join(c.text for c in inside)
                out.append((s.clip_id, Clip(s.start, s.end, text, sum(confs) / len(confs) if confs else None)))
            return out
        cs = ClipStats()
        clips = make_clips(cues, self.config.clip_rule, cs)
        stats.sentences += cs.sentences
        stats.dropped_short += cs.dropped_short
        stats.dropped_long += cs.dropped_long
        return [(f"{task.video_id}.{i}", c) for i, c in enumerate(clips, 1)]

    def _video(
        self, task: VideoTask, part: int, tar: tarfile.TarFile, rows: list[dict[str, Any]], stats: _ShardStats
    ) -> None:
        if not os.path.isfile(task.path):
            stats.fail(task.path, "no such file")
            return
        cues, source = self._cues(task, stats)
        if source is None:
            stats.no_subtitles.append(task.path)
            if task.spans is None:
                return
        else:
            stats.subtitle_sources[source] = stats.subtitle_sources.get(source, 0) + 1
        clips = self._clips(task, cues, stats)
        if not clips:
            return
        try:
            cutter = VideoCutter(task.path, self.config.cut)
        except CutError as e:
            stats.fail(task.path, str(e))
            return
        with cutter:
            for clip_id, clip in clips:
                try:
                    cut = cutter.cut(clip.start, clip.end)
                except CutError as e:
                    stats.fail(task.path, str(e))
                    continue
                key = f"{part:05d}{len(rows):06d}"
                meta = {
                    "key": key,
                    "clip_id": clip_id,
                    "video_id": task.video_id,
                    "source": task.path,
                    "start": round(cut.start, 6),
                    "end": round(cut.end, 6),
                    "subtitle_start": round(clip.start, 6),
                    "subtitle_end": round(clip.end, 6),
                    "subtitle": clip.text,
                    "asr_confidence": clip.confidence,
                    "subtitle_source": source,
                    "cut": cut.method,
                    "frames": cut.frames,
                }
                _add(tar, f"{key}.mp4", cut.data)
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                _add(tar, f"{key}.txt", clip.text.encode("utf-8"))
                rows.append(
                    {**{c: meta.get(c) for c in MANIFEST_COLUMNS}, "shard": stats.shard, "bytes": len(cut.data)}
                )
                stats.clips += 1
                stats.seconds += cut.end - cut.start
                stats.bytes += len(cut.data)
                setattr(stats, cut.method, getattr(stats, cut.method) + 1)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _manifest_schema():  # noqa: ANN202 - pyarrow is imported lazily
    import pyarrow as pa

    return pa.schema(
        [
            ("clip_id", pa.string()), ("key", pa.string()), ("shard", pa.string()), ("video_id", pa.string()),
            ("source", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("subtitle", pa.string()),
            ("asr_confidence", pa.float64()), ("subtitle_source", pa.string()), ("cut", pa.string()),
            ("frames", pa.int64()), ("bytes", pa.int64()),
        ]
    )  # fmt: skip


def merge_manifests(job: CorpusJob) -> Path | None:
    """``manifest.parquet`` = every shard's rows, once all shards are done (None while some are missing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not all(job.is_done(p) for p in range(job.num_parts)):
        return None
    tables = [pq.read_table(job.manifest_path(p)) for p in range(job.num_parts)]
    path = job.out / "manifest.parquet"
    atomic_save_parquet(path, pa.concat_tables(tables) if tables else _manifest_schema().empty_table())
    return path


def summarize(job: CorpusJob) -> dict[str, Any]:
    """Totals over the shards that are done (read from their stats files)."""
    keys = ("videos", "videos_with_clips", "clips", "seconds", "bytes", "copy", "reencode", "dropped_short")
    tot: dict[str, Any] = {k: 0 for k in keys}
    tot.update(shards_done=0, failed=[], no_subtitles=0)
    for p in range(job.num_parts):
        if not job.is_done(p):
            continue
        s = json.loads(job.stats_path(p).read_text(encoding="utf-8"))
        tot["shards_done"] += 1
        for k in keys:
            tot[k] += s.get(k, 0)
        tot["failed"] += s.get("failed", [])
        tot["no_subtitles"] += len(s.get("no_subtitles", []))
    return tot
