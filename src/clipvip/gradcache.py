"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup").

WHY: a contrastive loss couples every sample of the batch through the similarity matrix, so plain gradient
accumulation over micro-batches changes the loss (fewer negatives). GradCache keeps the full-batch loss and its exact
gradient while holding the activations of only one chunk at a time:

1. embed the whole batch chunk by chunk WITHOUT autograd graphs (cheap in memory: only [B, E] embeddings stay);
2. compute the loss once on the detached embeddings (gathered over ranks if the loss does so) and backpropagate it
   to the embeddings only: d loss / d emb, the "cached" gradients [B, E]; parameters used directly by the loss (the
   logit scale) receive their gradient here;
3. re-run each chunk WITH a graph and backpropagate ``emb_chunk . cached_grad_chunk``; parameter gradients
   accumulate chunk by chunk and sum to the full-batch gradient (chain rule; the encoder is per-sample).

The cost is one extra forward pass (about +33% compute); the memory is that of one chunk. The random state (dropout,
augmentation inside the encoder) is replayed in step 3 so both passes see the same randomness.

Usage (one training step; ``loss_fn`` sees the same dict of [B, E] tensors the trainer would otherwise compute)::

    gc = GradCache(chunk_size=16)
    loss = gc.step(
        encoders={"video": model.encode_video, "subtitle": model.encode_text},
        inputs={"video": videos, "subtitle": subtitle_ids},
        loss_fn=lambda e: info_nce(gather_with_grad(e["video"]), gather_with_grad(e["subtitle"]),
                                   model.logit_scale),
    )
    average_gradients(model.parameters())  # multi-process only; a no-op in one process
    optimizer.step(); optimizer.zero_grad()

Multi-process: do NOT wrap the model in DDP for this step. DDP's gradient hooks only work for backward passes of
graphs built by its own ``forward``, while GradCache runs one backward per chunk through ``encode_*``. Instead every
rank runs ``step`` on its local batch (the loss gathers embeddings with ``gather_with_grad``) and then
``average_gradients`` all-reduces the gradients once. The result equals one process running the global batch (see
``clipvip.distributed`` for the gradient scale: the gather's backward sums over ranks, the average divides by them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from clipvip.distributed import is_distributed

Batch = Tensor | Sequence[Any]  # a tensor split along dim 0, or a list (e.g. of strings)


def split_batch(x: Batch, chunk_size: int) -> list[Batch]:
    """Split a tensor (dim 0) or a sequence into consecutive chunks of at most ``chunk_size`` samples."""
    if isinstance(x, Tensor):
        return list(torch.split(x, chunk_size, dim=0))
    return [x[i : i + chunk_size] for i in range(0, len(x), chunk_size)]


class RandomState:
    """Snapshot of the CPU (and, if used, CUDA) RNG state, replayable with ``with state.replay():``."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


@dataclass
class GradCache:
    """Exact full-batch contrastive gradients in the memory of one ``chunk_size`` chunk."""

    chunk_size: int

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")

    def step(
        self,
        encoders: Mapping[str, Callable[[Any], Tensor]],
        inputs: Mapping[str, Batch],
        loss_fn: Callable[[dict[str, Tensor]], Tensor],
    ) -> Tensor:
        """Accumulate d loss / d params into ``.grad`` of every parameter the encoders and ``loss_fn`` use.

        ``encoders[name]`` maps a chunk of ``inputs[name]`` to embeddings [b, E] (several names may share one
        encoder, e.g. subtitles and captions through ``encode_text``). ``loss_fn`` gets {name: [B, E]} for the
        local batch and returns the scalar loss; do any ``gather_with_grad`` inside it.
        Returns the detached loss. Call ``optimizer.zero_grad()`` before as usual: gradients ACCUMULATE.
        """
        if set(encoders) != set(inputs):
            raise ValueError(f"encoders {sorted(encoders)} and inputs {sorted(inputs)} name different streams")
        chunks = {name: split_batch(x, self.chunk_size) for name, x in inputs.items()}

        # 1) embeddings without graphs, remembering each chunk's random state for the replay
        states: dict[str, list[RandomState]] = {}
        embs: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, parts in chunks.items():
                states[name], outs = [], []
                for part in parts:
                    states[name].append(RandomState())
                    outs.append(encoders[name](part))
                embs[name] = torch.cat(outs).detach().requires_grad_(True)  # [B, E] leaf

        # 2) the loss once, on the full (local, then gathered) batch: cache d loss / d emb
        loss = loss_fn(embs)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        loss.backward()

        # 3) re-run each chunk with a graph and push the cached gradient through it
        for name, parts in chunks.items():
            if embs[name].grad is None:
                raise ValueError(f"loss_fn does not use the {name!r} embeddings; drop that stream")
            cached = torch.split(embs[name].grad, self.chunk_size)
            for i, part in enumerate(parts):
                with states[name][i].replay():
                    emb = encoders[name](part)  # [b, E], now with a graph
                if emb.shape != cached[i].shape:
                    raise RuntimeError(
                        f"{name!r} chunk {i}: re-run gave {tuple(emb.shape)}, first pass "
                        f"{tuple(cached[i].shape)} (is the encoder deterministic?)"
                    )
                if emb.requires_grad:  # a frozen encoder (no trainable parameters) needs no backward
                    emb.backward(cached[i].to(emb.dtype))  # params.grad += (d emb / d params)^T cached
        return loss.detach()


def average_gradients(params: Iterable[Tensor]) -> None:
    """All-reduce (mean) ``.grad`` over ranks after ``GradCache.step``; a no-op in a single process."""
    if not is_distributed():
        return
    ws = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ws)
