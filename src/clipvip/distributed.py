"""PyTorch distributed helpers: torchrun initialisation and an all-gather that carries gradients.

Launch (single node, 8 GPUs)::

    torchrun --standalone --nproc_per_node 8 -m clipvip_apps.cli train --config CONFIG.yaml

Multi-node is plain torchrun flags, run the same line on every node::

    torchrun --nnodes 4 --nproc_per_node 8 --node_rank $NODE_RANK \\
             --rdzv_backend c10d --rdzv_endpoint $MASTER_HOST:29500 --rdzv_id clipvip \\
             -m clipvip_apps.cli train --config CONFIG.yaml

Without torchrun (no ``WORLD_SIZE`` in the environment) everything runs as one process and ``gather_with_grad``
is the identity. The backend is NCCL on CUDA and gloo on CPU.

Gradient scale: every rank computes the SAME loss on the gathered global batch. ``gather_with_grad``'s backward
sums the gathered gradient over ranks (all-reduce) and returns this rank's slice, i.e. ``world_size`` times the
gradient of the global loss w.r.t. the local embeddings; DDP then averages parameter gradients over ranks, which
divides that factor out again. Net result: the gradients equal those of one process running the whole global batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun set them for this process; (0, 1, 0) without torchrun.

    Reads the environment only and creates no process group: code that needs only its local rank (the captioner's
    GPU) uses it as it is; ``init_distributed`` builds on it. Data jobs take their slice from
    ``clipvip.jobs.worker_slice``, which also reads Slurm arrays."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    ``device``: "cpu", "cuda" or None (CUDA when available). Without torchrun's variables this returns a
    single-process ``DistInfo`` and creates no process group. Safe to call when a group already exists.
    """
    want_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    rank, world, local_rank = launch_env()
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    elif world > 1:
        backend = "nccl" if want_cuda else "gloo"
        if want_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    dev = torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; backward all-reduces (sums) the full gradient and keeps this rank's slice.

    Ranks may hold different batch sizes (a collate step that dropped undecodable samples): sizes are exchanged
    first and every rank's rows are padded to the largest size for the collective, then trimmed."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        ws = dist.get_world_size()
        n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        sizes_t = [torch.zeros_like(n) for _ in range(ws)]
        dist.all_gather(sizes_t, n)
        sizes = [int(s.item()) for s in sizes_t]
        m = max(sizes)
        padded = x if x.shape[0] == m else torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
        out = [torch.empty_like(padded) for _ in range(ws)]
        dist.all_gather(out, padded)
        ctx.rank, ctx.sizes, ctx.max = dist.get_rank(), sizes, m
        return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        sizes, m = ctx.sizes, ctx.max
        parts = grad.split(sizes, dim=0)
        full = torch.cat(
            [p if p.shape[0] == m else torch.cat([p, p.new_zeros((m - p.shape[0], *p.shape[1:]))]) for p in parts]
        ).contiguous()
        dist.all_reduce(full, op=dist.ReduceOp.SUM)
        start = ctx.rank * m
        return full[start : start + sizes[ctx.rank]]


def gather_with_grad(x: Tensor) -> Tensor:
    """[b, ...] on each rank -> [world_size * b, ...] in rank order, differentiable (see module docstring for the
    gradient scale). Identity in a single process. Batch sizes may differ between ranks."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def cleanup() -> None:
    """Destroy the process group if one exists (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container or ``taskset`` limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """Data-loading workers to use when the user did not say: the CPUs this process may run on, shared between
    the processes torchrun started on this node, minus one for the process that runs the model (at least 1)."""
    cpus = available_cpus()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(local, 1) - 1)
