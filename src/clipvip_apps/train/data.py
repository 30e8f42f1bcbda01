"""The trainer's data side: the resumable global-batch sampler, data sets built from a config, and the check that
every rank has a usable batch.

WHY a sampler of our own: exact resume and rank-independence. Epoch ``e``'s order is a pure function of the seed
and ``e``, so a resumed run, and 2 ranks x batch 4 against 1 process x batch 8, see exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from clipvip.distributed import DistInfo
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
