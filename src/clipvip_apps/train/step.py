"""One training step's pieces: which streams a batch has, their embeddings, THE loss, and the GradCache step.

Kept apart from the loop (``clipvip_apps.train.trainer``) because three callers share them: the plain step (under
DDP, through ``Embedder``), the gradient-cache step (``clipvip.gradcache`` re-runs the same encoders chunk by
chunk) and the distributed tests, which compare ranks against one process on exactly this code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from clipvip.distributed import gather_with_grad
from clipvip.gradcache import GradCache
from clipvip.losses import FINETUNE_LOSSES, OCL_STREAMS, ocl_loss
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
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
