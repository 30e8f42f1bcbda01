"""Data sets of the demo: every clip is decoded ONCE with the library reader, then served from memory.

Decoding a video every epoch would dominate a CPU demo, so ``FrameCache`` runs ``clipvip.video.read_frames`` /
``with_middle`` (the same reader a real run uses) once per file and keeps the uint8 frames. The data sets
below produce exactly the sample dicts the trainer and ``clipvip.eval.evaluate_retrieval`` consume:

- ``CaptionedClips``  (fine-tuning and the image-text stage): {"video", "text"}, a random caption per clip per
  epoch, like the retrieval training set;
- ``PretrainClips``   (post-pretraining): {"video", "frame", "subtitle", "caption"};
- ``GalleryClips``    (evaluation): one item per clip, {"video", "video_index"}, with ``texts`` / ``text_to_video``.

Batches are made by the library's ``clipvip.data.collate`` (undecodable items become ``batch["skipped"]``).

``repeats`` lets one trainer "epoch" cover several passes, so a short run writes one checkpoint, not dozens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset
from tqdm.auto import tqdm

from clipvip.video import VideoDecodeError, normalize, read_frames


class FrameCache:
    """uint8 frames [T, 3, S, S] per file, decoded once with the library reader; bad files are counted."""

    def __init__(self, num_frames: int, size: int) -> None:
        self.num_frames, self.size = num_frames, size
        self._frames: dict[str, Tensor] = {}
        self._middle: dict[str, Tensor] = {}
        self.failed: dict[str, str] = {}

    def load(self, paths: Sequence[Path], desc: str, middle: bool = False, progress: bool = True) -> None:
        for p in tqdm(list(paths), desc=f"decode {desc}", unit="file", disable=not progress, leave=False):
            key = str(p)
            if key in self._frames or key in self.failed:
                continue
            try:
                # one single-threaded decode per file (tiny clips: threads only add overhead); the middle
                # frame comes from the same decode, by the library's middle-frame rule
                vf = read_frames(p, num_frames=self.num_frames, size=self.size, threads=1, with_middle=middle)
                self._frames[key] = vf.frames
                if middle:
                    self._middle[key] = vf.middle[0]
            except VideoDecodeError as e:  # a long job survives a bad file: skip, count, report
                self.failed[key] = str(e)

    def has(self, path: Path) -> bool:
        return str(path) in self._frames

    def frames(self, path: Path) -> Tensor:
        return self._frames[str(path)]

    def middle(self, path: Path) -> Tensor:
        return self._middle[str(path)]


class _Repeated(Dataset):
    """Index ``i`` -> base item ``i % n``; ``set_epoch`` reseeds the per-item text choice."""

    def __init__(self, n: int, repeats: int, seed: int) -> None:
        if n == 0:
            raise ValueError("empty data set (every file failed to decode?)")
        self.n, self.repeats, self.seed, self.epoch = n, max(1, repeats), seed, 0

    def __len__(self) -> int:
        return self.n * self.repeats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, i))


class CaptionedClips(_Repeated):
    """Clip (or image: a 1-frame video) + one of its texts, drawn per (seed, epoch, index)."""

    def __init__(
        self, cache: FrameCache, paths: Sequence[Path], texts: Sequence[Sequence[str]], repeats: int = 1, seed: int = 0
    ) -> None:
        keep = [i for i, p in enumerate(paths) if cache.has(p)]
        self.cache = cache
        self.paths = [paths[i] for i in keep]
        self.texts = [list(texts[i]) for i in keep]
        super().__init__(len(self.paths), repeats, seed)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i % self.n
        options = self.texts[j]
        text = options[int(self._rng(i).integers(len(options)))] if len(options) > 1 else options[0]
        return {"video": normalize(self.cache.frames(self.paths[j])), "text": text}


def swap_words(text: str, pair: tuple[str, str] = ("left", "right")) -> str:
    """``text`` with the two words of ``pair`` exchanged: the caption of the mirrored scene for ("left", "right")."""
    a, b = pair
    return " ".join({a: b, b: a}.get(w, w) for w in text.split(" "))


class MirrorPairs(IterableDataset):
    """Image-text stream with hard negatives for position: a ``fraction`` of the images whose caption names
    "left" or "right" are followed by their horizontally flipped copy captioned with left <-> right swapped.

    Why: in a random contrastive batch shape / colour / size already tell positives from negatives, so the
    position word carries no gradient (measured: own caption beat the swapped one on ~54% of images). A mirror
    pair in the SAME batch can only be told apart by position. The stream is built of 2-item units (a mirror pair,
    or two plain images), so with an even batch size a pair never straddles two batches. Iterable, so the
    trainer's shuffling sampler cannot separate the pair; the order is reshuffled per (seed, epoch)."""

    def __init__(self, base: CaptionedClips, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"mirror fraction must be in [0, 1], got {fraction}")
        self.base, self.fraction, self.seed, self.epoch, self.repeats = base, fraction, seed, 0, 1
        self.n = base.n
        self.mirrorable = [any(w in ("left", "right") for w in t[0].split()) for t in base.texts]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _item(self, j: int, i: int, mirrored: bool) -> dict[str, Any]:
        item = self.base[j + i * self.n]  # index past n: a fresh per-(seed, epoch, index) caption draw
        if mirrored:
            item = {"video": item["video"].flip(-1), "text": swap_words(item["text"])}
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.base.set_epoch(self.epoch)
        rng = np.random.default_rng((self.seed, self.epoch, 7))
        for r in range(self.repeats):
            order = rng.permutation(self.n)
            paired = (rng.random(self.n) < self.fraction) & np.asarray(self.mirrorable, dtype=bool)[order]
            single: list[int] = []
            for j, pair in zip(order.tolist(), paired.tolist(), strict=True):
                if pair:
                    yield self._item(j, r, False)
                    yield self._item(j, r, True)
                else:
                    single.append(j)
                    if len(single) == 2:
                        yield from (self._item(k, r, False) for k in single)
                        single = []


class PretrainClips(_Repeated):
    """Post-pretraining sample: clip, its middle frame, subtitle (S) and auxiliary caption (C).

    ``text_source="caption"`` puts the caption in the subtitle slot: the uni-source video-caption baseline of
    paper Table 4 trained with plain L_VS."""

    def __init__(
        self,
        cache: FrameCache,
        paths: Sequence[Path],
        rows: Sequence[dict[str, Any]],
        repeats: int = 1,
        seed: int = 0,
        text_source: str = "subtitle",
    ) -> None:
        if text_source not in ("subtitle", "caption"):
            raise ValueError(f"text_source must be 'subtitle' or 'caption', got {text_source!r}")
        keep = [i for i, p in enumerate(paths) if cache.has(p)]
        self.cache, self.text_source = cache, text_source
        self.paths = [paths[i] for i in keep]
        self.rows = [rows[i] for i in keep]
        super().__init__(len(self.paths), repeats, seed)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i % self.n
        p, row = self.paths[j], self.rows[j]
        return {
            "video": normalize(self.cache.frames(p)),
            "frame": normalize(self.cache.middle(p)),
            "subtitle": row[self.text_source],
            "caption": row["caption"],
        }


class GalleryClips(Dataset):
    """Evaluation set: one item per clip; ``texts[k]`` describes clip ``text_to_video[k]``."""

    def __init__(self, cache: FrameCache, paths: Sequence[Path], texts: Sequence[str]) -> None:
        self.cache, self.paths = cache, list(paths)
        self.texts = list(texts)
        self.text_to_video = list(range(len(self.paths)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.paths[i]
        if not self.cache.has(p):
            return {"skipped": {"video_index": i, "path": str(p), "reason": self.cache.failed.get(str(p), "?")}}
        return {"video": normalize(self.cache.frames(p)), "video_index": i}
