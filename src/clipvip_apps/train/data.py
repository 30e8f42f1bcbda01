"""The trainer's data side: the resumable global-batch sampler, data sets built from a config, one epoch's batches
from a saved position (``TrainData``), the check that every rank has a usable batch, and the bad samples of all
ranks in one ``SkipCounter``.

WHY a sampler of our own: exact resume and rank-independence. Epoch ``e``'s order is a pure function of the seed
and ``e``, so a resumed run, and 2 ranks x batch 4 against 1 process x batch 8, see exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from clipvip.data import SkipCounter
from clipvip.distributed import DistInfo
from clipvip_apps.train.checkpoint import capture_rng, restore_rng
from clipvip_apps.train.config import TrainConfig


class ResumableBatchSampler(Sampler[list[int]]):
    """Global-batch sampler: epoch ``e``'s order is ``randperm(n, seed + e)``; global batch ``b`` is the slice
    ``[b*G, (b+1)*G)`` with G = batch_size * world_size, and rank r takes its r-th sub-slice. Incomplete global
    batches are dropped. ``set_epoch(e, start_batch)`` restarts mid-epoch without touching earlier samples, and
    1 process x batch 8 sees exactly the samples of 2 processes x batch 4."""

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch, self.start, self.stop = 0, 0, self.num_batches

    @property
    def num_batches(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start_batch: int = 0, stop_batch: int | None = None) -> None:
        self.epoch, self.start = epoch, start_batch
        self.stop = self.num_batches if stop_batch is None else min(stop_batch, self.num_batches)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            perm = torch.arange(self.n)
        G, B = self.batch_size * self.world, self.batch_size
        for b in range(self.start, self.stop):
            lo = b * G + self.rank * B
            yield perm[lo : lo + B].tolist()


@dataclass
class TrainData:
    """The training set and how a run walks it: a map-style set through ``ResumableBatchSampler`` (epochs of
    ``steps_per_epoch`` optimizer steps), a stream (``IterableDataset``, no length) batch by batch until
    ``max_steps``."""

    dataset: Dataset
    collate: Callable
    batch_size: int
    grad_accum: int
    seed: int
    num_workers: int
    sampler: ResumableBatchSampler | None  # None for a stream
    steps_per_epoch: int | None  # None for a stream

    @classmethod
    def build(cls, dataset: Dataset, collate: Callable, cfg: TrainConfig, dinfo: DistInfo) -> TrainData:
        """Checks the set against the config: a stream needs ``max_steps``, a map-style set one full step."""
        args = (dataset, collate, cfg.batch_size, cfg.grad_accum, cfg.seed, cfg.num_workers)
        if isinstance(dataset, IterableDataset):
            if cfg.max_steps is None:
                raise ValueError("a streaming (iterable) training set has no length: set max_steps")
            return cls(*args, sampler=None, steps_per_epoch=None)
        sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, cfg.seed, dinfo.rank, dinfo.world_size)
        steps_per_epoch = sampler.num_batches // cfg.grad_accum
        if steps_per_epoch == 0:
            raise ValueError(
                f"training set of {len(dataset)} samples is smaller than one optimizer step "
                f"(batch_size {cfg.batch_size} x world {dinfo.world_size} x grad_accum {cfg.grad_accum})"
            )
        return cls(*args, sampler=sampler, steps_per_epoch=steps_per_epoch)

    def batches(self, epoch: int, start_batch: int, pin_memory: bool) -> Iterator[Any]:
        """Epoch ``epoch``'s collated batches from batch ``start_batch`` on (the data position of a checkpoint).

        The loader's generator is a function of (seed, epoch), like the sampler's order. A stream cannot seek: it
        replays ``start_batch`` batches, with the global RNG states shielded from the replay (the checkpoint's
        RNG states already account for them)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        loader_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start_batch, self.steps_per_epoch * self.grad_accum)
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                generator=loader_gen,
                pin_memory=pin_memory,
                persistent_workers=False,
            )
        else:
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                collate_fn=self.collate,
                drop_last=True,
                num_workers=self.num_workers,
                generator=loader_gen,
                pin_memory=pin_memory,
            )
        it = iter(loader)
        if self.sampler is None and start_batch:
            rng = capture_rng()
            for _ in range(start_batch):
                next(it)
            restore_rng(rng)
        return it

    def epoch_done(self, batch_in_epoch: int) -> bool:
        """True once a map-style epoch's last full optimizer step is done (a stream's epoch ends when it does)."""
        return self.steps_per_epoch is not None and batch_in_epoch >= self.steps_per_epoch * self.grad_accum


def default_collate() -> Callable:
    try:
        from clipvip.data import collate
    except ImportError as e:  # pragma: no cover - clipvip.data ships with the library
        raise ImportError("clipvip.data.collate is required to batch training samples") from e
    return collate


def build_datasets(cfg: TrainConfig, model_config: Any = None) -> tuple[Dataset, Dataset | None]:
    """Data sets from the config's keyword arguments (the CLI path; the Python API takes dataset objects).
    Frame count and size default to ``model_config``'s (see ``clipvip_apps.train.data_args``)."""
    from clipvip import data
    from clipvip_apps.train.data_args import data_kwargs

    if not cfg.train_data:
        raise ValueError("train_data is empty: set the data set arguments in the config (or pass a dataset)")
    train_kw = data_kwargs(cfg.stage, cfg.train_data, model_config, cfg.num_frames, cfg.context_length)
    if cfg.stage == "pretrain":
        train_ds = _dataset(data.PretrainDataset, train_kw, "train_data")
    else:
        train_ds = _dataset(data.RetrievalDataset, {"split": "train", **train_kw}, "train_data")
    eval_ds = None
    if cfg.eval_data:
        eval_kw = data_kwargs("finetune", cfg.eval_data, model_config, cfg.num_frames, cfg.context_length)
        eval_ds = _dataset(data.RetrievalDataset, {"split": "test", **eval_kw}, "eval_data")
    return train_ds, eval_ds


def _dataset(cls: type, kwargs: dict[str, Any], key: str) -> Dataset:
    """``cls(**kwargs)``; arguments that do not fit its signature are a config error naming the config key."""
    import inspect

    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise ValueError(f"{key}: {e} (arguments of {cls.__name__}: {list(inspect.signature(cls).parameters)})") from e
    return cls(**kwargs)


def all_ranks_have_data(batch: dict[str, Any], dinfo: DistInfo) -> bool:
    """False when this or any other rank got a batch with no usable sample (collate dropped all of them)."""
    ok = isinstance(batch, dict) and "video" in batch and int(batch["video"].shape[0]) > 0
    if not dinfo.distributed:
        return ok
    flag = torch.tensor([0 if ok else 1], device=dinfo.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) == 0


def gather_skips(skips: SkipCounter, dinfo: DistInfo) -> SkipCounter:
    """Every rank's bad samples of an epoch in one counter (collective: all ranks call it), so rank 0's summary and
    count cover the whole job; without torch.distributed, ``skips`` itself."""
    if not dinfo.distributed:
        return skips
    parts: list[Any] = [None] * dinfo.world_size
    torch.distributed.all_gather_object(parts, (skips.items, skips.seen))
    return SkipCounter([x for items, _ in parts for x in items], sum(seen for _, seen in parts))
