"""Auxiliary captions (paper Sec. 4.1): caption the middle frame of every clip with an image captioner.

The paper runs OFA-Caption on the middle frame of each HD-VILA-100M clip and keeps at most 16 words, so the
pretraining text gets closer to downstream (descriptive) captions. Here any Hugging Face transformers image-to-text
model loadable through ``AutoModelForImageTextToText`` does the captioning (verified: ``VisionEncoderDecoderModel``,
``BlipForConditionalGeneration``, ``GitForCausalLM``).

The job is built for 100M clips on many GPUs: the input is streamed (jsonl / parquet manifests or
video2dataset-style WebDataset tar shards), frames are decoded in DataLoader workers, each torchrun rank appends to
its own part file (``OUT.parts/part-RRRRR-of-WWWWW.jsonl``), a restarted run skips what is already captioned (and
cuts a half-written last line), bad videos are skipped and listed, and when every rank is done the parts are merged
(deduplicated by clip id) into ``OUT`` atomically. Output lines are ``{"clip_id", "caption", "captioner"}``; the OCL
data set reads them by clip id as C.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

MAX_WORDS = 16
"""The paper's cap on auxiliary caption length (Sec. 4.1)."""

MANIFEST_SUFFIXES = (".jsonl", ".parquet")

MAX_REPORTED_FAILURES = 1000
"""Failures kept in memory for the report; the failures file lists every one."""


# ----------------------------------------------------------------------------------------------------------------
# Small pure helpers


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    """Whitespace-normalise and keep the first ``max_words`` words (the paper's 16-word cap)."""
    return " ".join(text.split()[:max_words])


def stable_hash(clip_id: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` is salted per process, so ranks would disagree)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode("utf-8"), digest_size=8).digest(), "big")


def owner_rank(clip_id: str, world_size: int) -> int:
    """The rank that captions ``clip_id`` for manifest inputs: independent of row order, so any reader agrees."""
    return stable_hash(clip_id) % world_size


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) when run as a single process."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


# ----------------------------------------------------------------------------------------------------------------
# Inputs: manifests and WebDataset shards


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


def iter_shard_samples(tar_path: str | Path, id_key: str = "clip_id") -> Iterator[tuple[str, str, bytes]]:
    """(clip_id, video extension, video bytes) for each sample of a video2dataset-style tar, streamed.

    Same grouping and clip-id rule as ``PretrainDataset`` (the json's ``id_key``, else the key). Samples without a
    video member are skipped with a warning; an unreadable tar raises ValueError naming it."""
    from clipvip.data.datasets import iter_tar_samples
    from clipvip.video import VIDEO_EXTENSIONS

    tar_path = Path(tar_path)
    try:
        for key, members in iter_tar_samples(os.fspath(tar_path)):
            ext = next((e for e in members if "." + e in VIDEO_EXTENSIONS), None)
            if ext is None:
                log.warning("%s: sample %r has no video member (%s); skipped", tar_path, key, ", ".join(members))
                continue
            meta: Any = {}
            if "json" in members:
                try:
                    meta = json.loads(members["json"].decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    meta = {}
            cid = meta.get(id_key) if isinstance(meta, dict) else None
            yield (str(cid) if cid not in (None, "") else os.path.basename(key)), ext, members[ext]
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{tar_path}: not a readable tar shard ({e})") from None


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


def _read_frame(path: str, size: int, resize: str) -> torch.Tensor:
    from clipvip.video import read_middle_frame

    frame = read_middle_frame(path, size=size, resize=resize)
    return frame[0] if frame.ndim == 4 else frame


class FrameStream(torch.utils.data.IterableDataset):
    """This rank's clips that are not done yet -> FrameItem, split between DataLoader workers.

    Manifest rows go to rank ``owner_rank(clip_id)``, then to worker ``(hash // world) % workers``; shards go whole
    to ranks, then whole to workers. Read errors become FrameItems with ``error`` set (the job goes on)."""

    def __init__(
        self,
        inputs: CaptionInput,
        rank: int,
        world_size: int,
        skip: set[str],
        frame_size: int,
        resize: str = "squash",
    ) -> None:
        super().__init__()
        self.inputs, self.rank, self.world_size = inputs, rank, world_size
        self.skip, self.frame_size, self.resize = skip, frame_size, resize

    def __iter__(self) -> Iterator[FrameItem]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.inputs.is_sharded:
            yield from self._iter_shards(self.inputs.rank_shards(self.rank, self.world_size)[worker::num_workers])
        else:
            yield from self._iter_manifests(worker, num_workers)

    def _read(self, clip_id: str, path: str, source: str) -> FrameItem:
        try:
            return FrameItem(clip_id, source, frame=_read_frame(path, self.frame_size, self.resize))
        except Exception as e:  # a long job survives any bad sample; the error is listed in the failures file
            return FrameItem(clip_id, source, error=f"{type(e).__name__}: {e}")

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
        seen: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="clipvip-caption-") as tmp:
            for shard in shards:
                try:
                    for clip_id, ext, data in iter_shard_samples(shard, self.inputs.manifest_options.id_key):
                        if clip_id in self.skip or clip_id in seen:
                            continue
                        seen.add(clip_id)
                        path = os.path.join(tmp, f"clip.{ext}")
                        with open(path, "wb") as f:
                            f.write(data)
                        yield self._read(clip_id, path, f"{shard}:{clip_id}.{ext}")
                except ValueError as e:  # an unreadable shard is reported once and the job moves on
                    yield FrameItem(clip_id=f"<shard {shard}>", source=shard, error=str(e))


def _identity(x: Any) -> Any:
    return x


# ----------------------------------------------------------------------------------------------------------------
# The captioner


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU (half precision is slow there)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _processor_frame_size(image_processor: Any, default: int = 224) -> int:
    """The side the captioner's own preprocessing works at, so the middle frame is read at about that size."""
    for attr in ("crop_size", "size"):
        size = getattr(image_processor, attr, None)
        if size is None:
            continue
        if isinstance(size, int):
            return size
        get = size.get if hasattr(size, "get") else lambda k, s=size: getattr(s, k, None)
        h, w, short = get("height"), get("width"), get("shortest_edge")
        if h and w:
            return int(max(h, w))
        if short:
            return int(short)
    return default


@dataclass
class CaptionerConfig:
    """Generation settings. The paper used OFA-Caption's defaults (beam search) and at most 16 words."""

    path: str
    name: str | None = None  # recorded in each output line; default: the path as given
    device: str | None = None  # default: cuda:LOCAL_RANK when CUDA is available, else cpu
    dtype: str = "auto"
    num_beams: int = 1  # 1 = greedy
    max_new_tokens: int = 30
    max_words: int = MAX_WORDS
    prompt: str | None = None  # conditional captioning prefix (verified with BLIP)
    keep_prompt: bool = False  # strip an echoed prompt from the caption unless asked to keep it
    generate_kwargs: dict[str, Any] = field(default_factory=dict)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def check_model_source(path: str) -> None:
    """Fail in a moment with one clear line, before transformers does (after its own retries and a long traceback):
    a path that is neither an existing folder nor a hub id, a folder without config.json, or a hub id that is not
    in the local cache while the hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or its host name does
    not resolve (no network)."""
    if os.path.exists(path):
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: not a transformers model folder (no config.json)")
        return
    if not _HUB_ID.fullmatch(path) or path.endswith((".", "-")):
        raise FileNotFoundError(
            f"{path}: no such folder (--captioner takes a transformers model folder or a hub id such as "
            "Salesforce/blip-image-captioning-base)"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)
    if offline:
        raise FileNotFoundError(
            f"{path}: not in the local hub cache and the hub is offline (HF_HUB_OFFLINE); download it on a "
            "machine with internet (huggingface-cli download) or pass a local model folder"
        )
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:  # a name lookup answers at once where the hub's HTTP client would retry for half a minute
        socket.getaddrinfo(host, 443)
    except OSError as e:
        raise FileNotFoundError(
            f"{path}: not in the local hub cache and {host} cannot be reached ({e}); connect to the internet, "
            "or pass a local model folder"
        ) from None


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class Captioner:
    """A transformers image-to-text model + its processor: batches of uint8 frames -> captions of <= 16 words."""

    def __init__(self, config: CaptionerConfig) -> None:
        check_model_source(config.path)  # before importing transformers: a mistake is reported in a moment
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        self.config = config
        self.name = config.name or config.path
        if config.device is not None:
            self.device = torch.device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", dist_env()[2] % torch.cuda.device_count())
        else:
            self.device = torch.device("cpu")
        self.dtype = _resolve_dtype(config.dtype, self.device)
        path = config.path
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)
        except ValueError as e:
            raise ValueError(f"{path}: not an image-to-text model that AutoModelForImageTextToText loads ({e})") from e
        self.model = model.to(self.device).eval()
        processor = AutoProcessor.from_pretrained(path)
        if hasattr(processor, "image_processor"):  # a multimodal processor (BLIP, GIT, ...)
            self.processor = processor
            self.image_processor = processor.image_processor
            self.tokenizer = processor.tokenizer
        else:  # VisionEncoderDecoder folders carry an image processor and a tokenizer but no processor class
            self.processor = None
            self.image_processor = AutoImageProcessor.from_pretrained(path)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        if config.prompt and self.processor is None:
            raise ValueError(f"{path}: a prompt needs a model with a multimodal processor (e.g. BLIP)")
        self.frame_size = _processor_frame_size(self.image_processor)

    @torch.inference_mode()
    def generate_text(self, frames: Sequence[torch.Tensor]) -> list[str]:
        """Decoded model output for uint8 [3, H, W] frames, before prompt stripping and truncation."""
        images = [f.cpu() for f in frames]
        if self.processor is not None:
            kwargs: dict[str, Any] = {"images": images, "return_tensors": "pt"}
            if self.config.prompt:
                kwargs["text"] = [self.config.prompt] * len(images)
            inputs = dict(self.processor(**kwargs))
        else:
            inputs = dict(self.image_processor(images=images, return_tensors="pt"))
        inputs.pop("token_type_ids", None)  # tokenizer by-product that generate() rejects
        inputs = {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        out = self.model.generate(
            **inputs,
            num_beams=self.config.num_beams,
            do_sample=False,
            max_new_tokens=self.config.max_new_tokens,
            **self.config.generate_kwargs,
        )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def postprocess(self, text: str) -> str:
        """Strip an echoed prompt (decoder-only models and BLIP repeat it) and apply the word cap."""
        text = " ".join(text.split())
        if self.config.prompt and not self.config.keep_prompt:
            prompt = " ".join(self.config.prompt.split())
            if text.lower().startswith(prompt.lower()):
                text = text[len(prompt) :]
        return truncate_words(text, self.config.max_words)

    def caption(self, frames: Sequence[torch.Tensor]) -> list[str]:
        """uint8 [3, H, W] middle frames -> one caption each, at most ``max_words`` words."""
        if len(frames) == 0:
            return []
        return [self.postprocess(t) for t in self.generate_text(frames)]


# ----------------------------------------------------------------------------------------------------------------
# Output: per-rank append-only part files, resumable, merged atomically


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


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a jsonl file, streamed; a bad line raises naming the file and line, except a half-written
    last line (no newline), which a crashed writer can leave and which is skipped with a warning."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                if not line.endswith("\n"):  # only the last line of a file can lack its newline
                    log.warning("%s:%d: ignoring a half-written last line", path, lineno)
                    return
                raise ValueError(f"{path}:{lineno}: corrupt line ({e.msg})") from None


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
        for rec in read_jsonl(f):
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


def _atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def merge_parts(out: str | Path) -> MergeReport:
    """OUT (if any) + every part file -> OUT, one line per clip id (first wins), written atomically.

    Also merges the failure lists into ``failed_path(out)``, minus clips that were captioned on a retry.
    Idempotent, so two ranks finishing at once may both merge."""
    out = Path(out)
    pdir = parts_dir(out)
    sources = ([out] if out.exists() else []) + (sorted(pdir.glob("part-*.jsonl")) if pdir.is_dir() else [])
    seen: set[str] = set()
    dup = 0

    def caption_lines() -> Iterator[str]:
        nonlocal dup
        for src in sources:
            for rec in read_jsonl(src):
                cid = str(rec["clip_id"])
                if cid in seen:
                    dup += 1
                    continue
                seen.add(cid)
                yield json.dumps(rec, ensure_ascii=False) + "\n"

    _atomic_write_lines(out, caption_lines())
    fout = failed_path(out)
    failed: dict[str, dict[str, Any]] = {}
    fsources = ([fout] if fout.exists() else []) + (sorted(pdir.glob("failed-*.jsonl")) if pdir.is_dir() else [])
    for src in fsources:
        for rec in read_jsonl(src):
            cid = str(rec["clip_id"])
            if cid not in seen:
                failed[cid] = rec  # the latest attempt's error wins
    if failed or fout.exists():
        _atomic_write_lines(fout, (json.dumps(r, ensure_ascii=False) + "\n" for r in failed.values()))
    return MergeReport(len(seen), dup, len(failed), str(out), str(fout))


# ----------------------------------------------------------------------------------------------------------------
# The job


@dataclass
class CaptionJobConfig:
    """Job settings: batching, workers, sharding, resume behaviour."""

    batch_size: int = 32
    num_workers: int = 4
    rank: int | None = None  # None: from torchrun's RANK / WORLD_SIZE
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

    env_rank, env_world, _ = dist_env()
    rank = env_rank if config.rank is None else config.rank
    world = env_world if config.world_size is None else config.world_size
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
        done_marker.write_text(json.dumps({"rank": rank, "world_size": world, "captioned": captioned}))
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
