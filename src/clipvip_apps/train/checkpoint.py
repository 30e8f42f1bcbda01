"""Atomic training checkpoints and RNG state capture, so ``--resume`` continues bit-for-bit on CPU.

A checkpoint is one ``torch.save`` file written to a temporary name and moved into place with ``os.replace`` (atomic
on POSIX), so a crash or ``kill -9`` at any moment leaves either the previous or the new file, never a torn one.
It holds: model, optimizer, scheduler and GradScaler states, the Python / NumPy / torch (CPU and CUDA) RNG states,
the data position (epoch, batches done in that epoch, optimizer step) and the full resolved config.
Everything stored is a tensor or a plain Python container, so it loads with ``torch.load(weights_only=True)``.
``TrainState`` is that state while a run holds it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipvip.distributed import DistInfo
from clipvip.io import atomic_path


def capture_rng() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file in the same folder + fsync + os.replace)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
    return p


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no checkpoint to resume from")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{p}: not a readable training checkpoint ({type(e).__name__}: {e})") from e


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the start of a run, and of each rank's stream after it)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """What a run advances and a checkpoint restores: the model, its optimizer / schedule / loss scaler, the
    optimizer step, the data position (epoch, batches done in it) and the best validation score so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None

    def checkpoint(self, rng: Any, config: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint dict (``rng``: this process's RNG states, or every rank's as a list)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_metric": self.best,
            "config": config,
        }

    def restore(self, ck: dict[str, Any], rank: int) -> None:
        """Load a ``checkpoint()`` dict, including rank ``rank``'s RNG states (strict: every weight must fit)."""
        self.model.load_state_dict(ck["model"], strict=True)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step, self.epoch, self.batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        self.best = ck.get("best_metric")
        restore_rng(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])


def gathered_rng(dinfo: DistInfo) -> Any:
    """This process's RNG states, or under torch.distributed every rank's (a list indexed by rank), so one file
    resumes every rank's stream."""
    rng = capture_rng()
    if not dinfo.distributed:
        return rng
    out: list[Any] = [None] * dinfo.world_size
    torch.distributed.all_gather_object(out, rng)
    return out


def save_train_state(path: Path, state: TrainState, config: dict[str, Any], dinfo: DistInfo) -> Path:
    """Every rank calls this together: their RNG states are gathered, rank 0 writes, all wait for the file."""
    rng = gathered_rng(dinfo)
    if dinfo.is_main:
        save_checkpoint(path, state.checkpoint(rng, config))
    if dinfo.distributed:
        torch.distributed.barrier()
    return path
