"""One training step: which streams a batch has, their embeddings, THE loss, the GradCache step, and
``StepRunner`` (a micro-batch's forward/backward and the optimizer update that closes an accumulation group).

Kept apart from the loop (``clipvip_apps.train.loop``) because three callers share them: the plain step (under
DDP, through ``Embedder``), the gradient-cache step (``clipvip.gradcache`` re-runs the same encoders chunk by
chunk) and the distributed tests, which compare ranks against one process on exactly this code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clipvip.distributed import DistInfo, gather_with_grad
from clipvip.gradcache import GradCache, average_gradients
from clipvip.losses import FINETUNE_LOSSES, OCL_STREAMS, ocl_loss
from clipvip.precision import DTYPES
from clipvip_apps.train.config import TrainConfig


def _text_ids(text: Any, context_length: int) -> Tensor:
    if isinstance(text, Tensor):
        return text
    from clipvip.tokenizer import tokenize

    return tokenize(list(text), context_length)


def batch_streams(
    model: nn.Module, batch: dict[str, Any], stage: str, context_length: int = 77, ocl_objective: str = "d"
) -> dict[str, tuple[Callable[[Tensor], Tensor], Tensor]]:
    """{stream name: (encoder, input on the model's device)} of one batch. Pretrain: video, subtitle and (when
    the OCL objective uses them) frame and caption; finetune: video and text. Frames may be [B, 3, H, W] or
    [B, 1, 3, H, W] (a 1-frame video). ``embed_batch`` and the gradient-cache step both run these."""
    dev = model.logit_scale.device
    streams = {"video": (model.encode_video, batch["video"].to(dev, non_blocking=True))}
    if stage == "finetune":
        streams["text"] = (model.encode_text, _text_ids(batch["text"], context_length).to(dev))
        return streams
    streams["subtitle"] = (model.encode_text, _text_ids(batch["subtitle"], context_length).to(dev))
    needs = OCL_STREAMS[ocl_objective]
    if "frame" in needs:
        frame = batch["frame"].to(dev, non_blocking=True)
        streams["frame"] = (model.encode_video, frame[:, None] if frame.ndim == 4 else frame)
    if "caption" in needs:
        streams["caption"] = (model.encode_text, _text_ids(batch["caption"], context_length).to(dev))
    return streams


def embed_batch(
    model: nn.Module, batch: dict[str, Any], stage: str, context_length: int = 77, ocl_objective: str = "d"
) -> dict[str, Tensor]:
    """Local L2-normalised embeddings of one batch, {stream name: [b, E]} (see ``batch_streams``)."""
    return {k: enc(x) for k, (enc, x) in batch_streams(model, batch, stage, context_length, ocl_objective).items()}


def contrastive_loss(embeddings: dict[str, Tensor], logit_scale: Tensor, cfg: TrainConfig) -> Tensor:
    """THE loss of a step: gather every embedding across ranks (with gradients), then OCL or fine-tuning InfoNCE
    on the global batch."""
    g = {k: gather_with_grad(v) for k, v in embeddings.items()}
    if cfg.stage == "pretrain":
        return ocl_loss(g["video"], g.get("frame"), g["subtitle"], g.get("caption"), logit_scale, cfg.ocl_objective)
    loss = FINETUNE_LOSSES[cfg.finetune_loss]
    return loss.fn(g["video"], g["text"], logit_scale, **{name: getattr(cfg, name) for name in loss.options})


def grad_cache_step(
    gc: GradCache, model: nn.Module, batch: dict[str, Any], cfg: TrainConfig, scaler: Any, device: torch.device
) -> Tensor:
    """One micro-batch through ``clipvip.gradcache``: exact gradients of ``contrastive_loss`` on the whole
    (gathered) batch, holding the activations of one ``grad_cache_chunk`` at a time. Returns the detached loss."""
    streams = batch_streams(model, batch, cfg.stage, cfg.context_length, cfg.ocl_objective)

    def encoder(enc: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        def run(x: Tensor) -> Tensor:
            with autocast(device, cfg.precision):
                return enc(x)

        return run

    raw: list[Tensor] = []

    def loss_fn(embs: dict[str, Tensor]) -> Tensor:
        loss = contrastive_loss(embs, model.logit_scale, cfg)
        raw.append(loss.detach())  # a NaN/inf here makes the caller raise before the optimizer runs
        return scaler.scale(loss / cfg.grad_accum)

    gc.step({k: encoder(enc) for k, (enc, _) in streams.items()}, {k: x for k, (_, x) in streams.items()}, loss_fn)
    return raw[0]


class Embedder(nn.Module):
    """Puts ``embed_batch`` behind ``forward`` so DDP sees the forward pass (it hooks gradients there)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.stage, self.context_length, self.objective = cfg.stage, cfg.context_length, cfg.ocl_objective

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        return embed_batch(self.model, batch, self.stage, self.context_length, self.objective), self.model.logit_scale


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The mixed-precision context of a step: none for fp32, else torch.autocast in bf16 / fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@dataclass
class StepRunner:
    """The same step for a plain, a DDP and a gradient-cache run: ``micro_batch`` per batch, ``update`` once per
    ``grad_accum`` micro-batches. Built by ``build``: DDP wraps the ``Embedder`` only without GradCache (GradCache
    re-runs the encoders itself, so it averages gradients across ranks with ``average_gradients`` instead)."""

    model: nn.Module
    embedder: nn.Module  # Embedder, or DistributedDataParallel(Embedder)
    grad_cache: GradCache | None
    cfg: TrainConfig
    scaler: torch.amp.GradScaler
    device: torch.device
    distributed: bool

    @classmethod
    def build(
        cls, model: nn.Module, cfg: TrainConfig, scaler: torch.amp.GradScaler, device: torch.device, dinfo: DistInfo
    ) -> StepRunner:
        embedder: nn.Module = Embedder(model, cfg)
        grad_cache = GradCache(cfg.grad_cache_chunk) if cfg.grad_cache_chunk else None
        if dinfo.distributed and grad_cache is None:
            embedder = nn.parallel.DistributedDataParallel(
                embedder, device_ids=[device.index] if device.type == "cuda" else None
            )
        return cls(model, embedder, grad_cache, cfg, scaler, device, dinfo.distributed)

    def micro_batch(self, batch: dict[str, Any], last: bool) -> float:
        """Forward and backward of one micro-batch (its gradient scaled by 1/grad_accum and added); returns the
        loss as a float, read from the device once (the only host sync of a micro-batch). A NaN/inf loss is not
        backpropagated. DDP all-reduces only on the ``last`` micro-batch of an accumulation group."""
        if self.grad_cache is not None:
            return grad_cache_step(self.grad_cache, self.model, batch, self.cfg, self.scaler, self.device).item()
        sync = contextlib.nullcontext() if (last or not self.distributed) else self.embedder.no_sync()
        with sync:
            with autocast(self.device, self.cfg.precision):
                embs, logit_scale = self.embedder(batch)
            loss = contrastive_loss(embs, logit_scale, self.cfg)
            value = loss.item()
            if math.isfinite(value):
                self.scaler.scale(loss / self.cfg.grad_accum).backward()
        return value

    def update(
        self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
    ) -> tuple[float, float]:
        """The optimizer step closing an accumulation group: gradient averaging (GradCache), clipping, AdamW,
        schedule. Returns (the lr this step used, the gradient norm before clipping; NaN without clipping)."""
        if self.grad_cache is not None:
            average_gradients(self.model.parameters())  # replaces DDP's all-reduce (no DDP with GradCache)
        if self.cfg.clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm))
        else:
            grad_norm = float("nan")
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        return lr, grad_norm
