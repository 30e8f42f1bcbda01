"""Batched text / video embedding with progress bars, and an on-disk embedding cache.

The cache key combines a fingerprint of the model (config + every weight byte) and of the data (texts, the text ->
video map, the dataset's frame settings and the annotation files it names), so a second ``clipvip eval`` with the
same model and data loads embeddings instead of decoding videos again, and any change to either misses the cache.
Video embedding checkpoints its progress (``partial_path``) so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from clipvip.io import atomic_path
from clipvip.weights.fingerprint import model_fingerprint  # noqa: F401  (re-exported by clipvip.eval)

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.inference_mode()
def embed_texts(
    model: nn.Module,
    texts: Sequence[str],
    batch_size: int = 256,
    context_length: int | None = None,
    *,
    progress: bool = True,
) -> Tensor:
    """L2-normalised text embeddings, fp32 [len(texts), E] on the CPU, in input order.

    ``context_length`` truncates long captions / paragraphs (EOT kept); default: the model's text context.
    Texts are encoded in order of length, so a batch holds texts of similar length and the text tower, which cuts
    each batch after its longest text, computes little padding (captions of ~10 tokens in a 70-token context:
    3.4x faster, BENCHMARKS.md).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    if not texts:
        raise ValueError("embed_texts: no texts given")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # characters: a cheap proxy for tokens
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        for a in tqdm(range(0, len(texts), batch_size), desc="texts", unit="batch", disable=not progress):
            batch = [texts[i] for i in order[a : a + batch_size]]
            out.append(model.encode_text(batch, context_length=context_length).float().cpu())
    finally:
        model.train(was_training)
    emb = torch.empty(len(texts), out[0].shape[1])
    emb[torch.tensor(order)] = torch.cat(out)
    return emb


def _default_collate() -> Callable[[list[Any]], Any]:
    from clipvip.data import collate  # the data package's collate: stacks videos, reports bad ones as "skipped"

    return collate


def _skipped_indices(batch: dict[str, Any]) -> list[int]:
    """Video indices of the samples the collate function dropped (entries are ints or dicts with "video_index")."""
    out = []
    for s in batch.get("skipped", None) or []:
        if isinstance(s, dict):
            if "video_index" in s:
                out.append(int(s["video_index"]))
        elif isinstance(s, (int, np.integer)) or (isinstance(s, Tensor) and s.numel() == 1):
            out.append(int(s))
    return out


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


@torch.inference_mode()
def embed_videos(
    model: nn.Module,
    loader_or_dataset: DataLoader | Dataset,
    batch_size: int = 16,
    num_workers: int = 0,
    *,
    num_videos: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    amp: bool = False,
    progress: bool = True,
    partial_path: str | Path | None = None,
    checkpoint_every: int = 50,
) -> Tensor:
    """L2-normalised video embeddings, fp32 [num_videos, E] on the CPU, row i = ``video_index`` i.

    Batches are dicts with "video" [B, T, 3, H, W] (CLIP-normalised) and "video_index" [B]; videos that failed to
    decode arrive in ``batch["skipped"]`` and get a row of NaN (``embedding_valid_mask`` finds them), never a silent
    zero. Given a dataset, a DataLoader is built with ``clipvip.data.collate`` (or ``collate_fn``). ``amp`` runs the
    vision tower under fp16 autocast on CUDA. With ``partial_path`` the finished rows are saved every
    ``checkpoint_every`` batches and, on a rerun, reused (only for a dataset, which can be subset).
    """
    device = _model_device(model)
    if isinstance(loader_or_dataset, DataLoader):
        loader, dataset = loader_or_dataset, None
        n = num_videos if num_videos is not None else len(loader_or_dataset.dataset)  # type: ignore[arg-type]
    else:
        dataset = loader_or_dataset
        n = num_videos if num_videos is not None else len(dataset)  # type: ignore[arg-type]
        loader = None
    emb: Tensor | None = None
    done = np.zeros(n, dtype=bool)
    partial = Path(partial_path) if partial_path is not None else None
    if partial is not None and partial.exists() and dataset is not None:
        with np.load(partial) as z:
            if z["done"].shape == (n,):
                done = z["done"].copy()
                emb = torch.from_numpy(z["emb"].copy())
                log.info("%s: resuming, %d of %d videos already embedded", partial, int(done.sum()), n)
    if loader is None:
        todo = np.flatnonzero(~done).tolist()
        subset = dataset if len(todo) == n else Subset(dataset, todo)  # type: ignore[arg-type]
        loader = DataLoader(
            subset,  # type: ignore[arg-type]
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_fn or _default_collate(),
            pin_memory=device.type == "cuda",
        )
    was_training = model.training
    model.eval()
    skipped: list[int] = []
    use_amp = amp and device.type == "cuda"
    try:
        bar = tqdm(loader, desc="videos", unit="batch", disable=not progress)
        for step, batch in enumerate(bar, start=1):
            skipped.extend(_skipped_indices(batch))
            idx = batch.get("video_index")
            video = batch.get("video")
            if video is None or idx is None or len(idx) == 0:
                continue
            idx_t = torch.as_tensor(idx, dtype=torch.long)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                e = model.encode_video(video.to(device, non_blocking=True)).float().cpu()
            if emb is None:
                emb = torch.full((n, e.shape[1]), float("nan"))
            if int(idx_t.max()) >= n or int(idx_t.min()) < 0:
                raise ValueError(f"video_index {int(idx_t.max())} outside [0, {n}); pass num_videos")
            emb[idx_t] = e
            done[idx_t.numpy()] = True
            if partial is not None and step % checkpoint_every == 0:
                _save_npz_atomic(partial, emb=emb.numpy(), done=done)
            bar.set_postfix(skipped=len(skipped))
    finally:
        model.train(was_training)
    if emb is None:
        raise ValueError(f"no video could be embedded ({len(skipped)} skipped)")
    if skipped:
        log.warning("%d of %d videos could not be read and are excluded (first: index %d)", len(skipped), n, skipped[0])
    missing = int((~done).sum())
    if missing and missing != len(set(skipped)):
        log.warning("%d videos have no embedding (neither embedded nor reported as skipped)", missing)
    if partial is not None and partial.exists():
        partial.unlink()
    return emb


def embedding_valid_mask(emb: Tensor) -> Tensor:
    """True for rows that hold an embedding (not the NaN rows of skipped videos)."""
    return ~torch.isnan(emb).any(dim=1)


# ----------------------------------------------------------------------------------------------- fingerprints


def _describe(value: Any, depth: int = 0) -> Any:
    """JSON-able description of dataset settings; files it names contribute their size and mtime."""
    if depth > 3:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _describe(v, depth + 1) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (str, os.PathLike)):
        s = os.fspath(value)
        if len(s) < 4096 and ("/" in s or "." in s):
            try:
                st = os.stat(s)
                if os.path.isfile(s):
                    return [s, st.st_size, st.st_mtime_ns]
            except OSError:
                pass
        return s
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if (
        isinstance(value, (list, tuple))
        and len(value) <= 64
        and all(isinstance(v, (int, float, bool, str)) for v in value)
    ):
        return list(value)
    if isinstance(value, dict) and len(value) <= 64:
        return {str(k): _describe(v, depth + 1) for k, v in value.items()}
    return None


# dataset attributes that do not change what an eval run computes (or are hashed separately above)
_NOT_DATA = frozenset({"texts", "text_to_video", "threads", "timeout", "epoch", "missing", "num_workers"})


def data_fingerprint(dataset: Any, extra: dict[str, Any] | None = None) -> str:
    """sha256 describing an evaluation dataset: its ``cache_key()`` if it has one, else its texts, text -> video
    map, size and the simple settings it stores (frames, resolution, annotation paths with size + mtime)."""
    h = hashlib.sha256()
    if hasattr(dataset, "cache_key"):
        key = dataset.cache_key() if callable(dataset.cache_key) else dataset.cache_key
        h.update(str(key).encode())
    else:
        h.update(str(len(dataset)).encode())
        for t in getattr(dataset, "texts", []) or []:
            h.update(t.encode())
            h.update(b"\0")
        h.update(np.asarray(getattr(dataset, "text_to_video", []), dtype=np.int64).tobytes())
        settings = {k: _describe(v) for k, v in sorted(vars(dataset).items()) if not k.startswith("_")}
        settings = {k: v for k, v in settings.items() if v is not None and k not in _NOT_DATA}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for name in ("paths", "video_paths", "videos", "video_ids"):
            seq = getattr(dataset, name, None)
            if isinstance(seq, (list, tuple)):
                for v in seq:
                    h.update(str(v).encode())
                    h.update(b"\0")
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


class EmbeddingCache:
    """``<dir>/<model_fp[:16]>-<data_fp[:16]>.npz`` with the text and video embeddings; atomic writes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, model_fp: str, data_fp: str) -> Path:
        return self.directory / f"v{CACHE_VERSION}-{model_fp[:16]}-{data_fp[:16]}.npz"

    def load(self, model_fp: str, data_fp: str) -> tuple[Tensor, Tensor] | None:
        p = self.path(model_fp, data_fp)
        if not p.exists():
            return None
        try:
            with np.load(p) as z:
                if str(z["model_fp"]) != model_fp or str(z["data_fp"]) != data_fp:
                    return None
                return torch.from_numpy(z["text_emb"].copy()), torch.from_numpy(z["video_emb"].copy())
        except (OSError, KeyError, ValueError) as e:
            log.warning("%s: unreadable embedding cache (%s); recomputing", p, e)
            return None

    def save(self, model_fp: str, data_fp: str, text_emb: Tensor, video_emb: Tensor) -> Path:
        p = self.path(model_fp, data_fp)
        _save_npz_atomic(
            p,
            text_emb=text_emb.numpy(),
            video_emb=video_emb.numpy(),
            model_fp=np.array(model_fp),
            data_fp=np.array(data_fp),
        )
        return p

    def partial_path(self, model_fp: str, data_fp: str) -> Path:
        return self.path(model_fp, data_fp).with_suffix(".videos.partial.npz")
