"""One trainer for both stages: OCL post-pretraining and retrieval fine-tuning (paper Sec. 4.3, 5.1).

The train package, one concept per module: ``trainer`` (this: ``train()`` builds a run), ``loop`` (the run and
``train_one_epoch``), ``step`` (a step's streams, embeddings, loss, GradCache step, optimizer update), ``data``
(sampler, data sets, an epoch's batches, skip counts), ``validate``, ``checkpoint`` (``TrainState``, RNG states),
``metrics``, ``optim``, ``config``.

Step structure (kept in three pieces so gradient caching can reuse them, see ``clipvip.gradcache``):

1. ``embed_batch(model, batch, stage, ...)`` -> local L2-normalised embeddings
   (pretrain: video / frame / subtitle / caption; finetune: video / text);
2. ``contrastive_loss(embeddings, logit_scale, cfg)`` gathers every embedding across ranks WITH gradients and
   computes the loss on the global batch, the ONLY place a loss is computed;
3. backward / grad-norm clip / AdamW / cosine schedule.

Resume is exact on CPU: the data order is a pure function of (seed, epoch) and the data position, and the RNG
states are checkpointed after validation, so N steps straight and N/2 + ``kill -9`` + ``--resume`` give bitwise
equal weights. With ``num_workers > 0`` this still holds if the data set draws its randomness from
``set_epoch(epoch)`` + the sample index (worker RNG streams restart on resume).

Gradient accumulation runs ``grad_accum`` micro-batches per optimizer step, each with its own contrastive matrix
over ``batch_size * world_size`` samples (it saves memory, it does not enlarge the set of negatives; gradient
caching does that).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from clipvip.distributed import DistInfo, init_distributed
from clipvip_apps.train.checkpoint import TrainState, load_checkpoint, seed_everything
from clipvip_apps.train.config import TrainConfig
from clipvip_apps.train.data import ResumableBatchSampler, TrainData, build_datasets, default_collate
from clipvip_apps.train.loop import BEST, LAST, NonFiniteLossError, TrainRun, train_one_epoch
from clipvip_apps.train.metrics import MetricsLog
from clipvip_apps.train.optim import adamw, build_scheduler, param_groups
from clipvip_apps.train.step import StepRunner, batch_streams, contrastive_loss, embed_batch
from clipvip_apps.train.validate import default_evaluate_fn

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None  # None when no eval set was given
    model_dir: Path | None  # final weights as a ``clipvip.load``-able folder
    best_model_dir: Path | None
    best_metric: float | None
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records
    skipped: int = 0  # samples the collate step dropped (undecodable), over this call
    model: nn.Module | None = None  # the trained model (unwrapped)


# --------------------------------------------------------------------------------------------------- model


def model_config_for(cfg: TrainConfig):
    """A ``ModelConfig`` for ``cfg.arch`` ("tiny", "B/32", "B/16") when no ``init`` checkpoint is given."""
    import dataclasses

    from clipvip.config import ModelConfig, VisionConfig, tiny_config

    if cfg.arch == "tiny":
        mc = tiny_config(cfg.variant)
    elif cfg.arch in ("B/32", "B/16"):
        mc = ModelConfig(variant=cfg.variant, vision=VisionConfig(patch_size=int(cfg.arch[2:])))
    else:
        raise ValueError(f"unknown arch {cfg.arch!r}; expected 'tiny', 'B/32' or 'B/16' (or set init: PATH)")
    if cfg.num_frames is not None:
        mc = dataclasses.replace(mc, num_frames=cfg.num_frames)
    return mc


def build_model(cfg: TrainConfig) -> nn.Module:
    """``clipvip.load(cfg.init)`` (a plain CLIP checkpoint becomes ViP) or a fresh ``cfg.arch`` model."""
    import clipvip

    if cfg.init:
        return clipvip.load(cfg.init, variant=cfg.variant, num_frames=cfg.num_frames)
    return clipvip.CLIPViP(model_config_for(cfg))


# ------------------------------------------------------------------------------------------------ train


def train(
    cfg: TrainConfig,
    model: nn.Module | None = None,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
    *,
    resume: bool = False,
    collate_fn: Callable | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    evaluate_fn: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (default: ``build_model(cfg)``) on ``train_dataset`` (default: from ``cfg.train_data``).

    ``resume``: continue from ``run_dir/checkpoints/last.pt`` exactly. ``callbacks`` are called after every
    optimizer step with that step's record (after validation and checkpointing). ``evaluate_fn(model,
    eval_dataset, batch_size=...)`` defaults to ``clipvip.eval.evaluate_retrieval``.
    Raises ``NonFiniteLossError`` on a NaN/inf loss (the last good checkpoint is kept).
    """
    dinfo: DistInfo = init_distributed(cfg.device)
    device = _device(cfg, dinfo)
    seed_everything(cfg.seed)
    model = _prepare_model(model if model is not None else build_model(cfg), cfg, device)
    if train_dataset is None:
        train_dataset, built_eval = build_datasets(cfg, getattr(model, "config", None))
        eval_dataset = eval_dataset if eval_dataset is not None else built_eval
    # the run folder only once the model and data are known to load: a config mistake leaves no stray run folder
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if dinfo.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(run_dir / "config.yaml")
    if eval_dataset is not None and evaluate_fn is None:
        evaluate_fn = default_evaluate_fn(cfg)
    data = TrainData.build(train_dataset, collate_fn or default_collate(), cfg, dinfo)
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * data.steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total_steps)

    groups = param_groups(model, cfg.weight_decay, lr=cfg.lr, new_param_lr=cfg.new_param_lr)
    optimizer = adamw(groups, cfg.lr, cfg.betas, cfg.eps, device)
    scheduler = build_scheduler(optimizer, total_steps, warmup, cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    steps = StepRunner.build(model, cfg, scaler, device, dinfo)  # DDP (if any) wraps the model before a resume
    state = TrainState(model, optimizer, scheduler, scaler)
    if resume:
        state.restore(load_checkpoint(ckpt_dir / LAST), dinfo.rank)
        st = state
        log.info("resumed %s at step %d (epoch %d, batch %d)", ckpt_dir / LAST, st.step, st.epoch, st.batch_in_epoch)
    else:
        seed_everything(cfg.seed + dinfo.rank)

    resumed_best = resume and (ckpt_dir / BEST).exists()
    run = TrainRun(
        cfg=cfg,
        dinfo=dinfo,
        run_dir=run_dir,
        state=state,
        data=data,
        steps=steps,
        total_steps=total_steps,
        metrics=MetricsLog(run_dir, dinfo.is_main, keep_up_to_step=state.step if resume else None),
        bar=tqdm(
            total=total_steps,
            initial=state.step,
            disable=not (progress and dinfo.is_main),
            desc=f"{cfg.stage}",
            unit="step",
            dynamic_ncols=True,
        ),
        eval_dataset=eval_dataset,
        evaluate_fn=evaluate_fn,
        callbacks=callbacks,
        last_ckpt=ckpt_dir / LAST if resume else None,
        best_ckpt=ckpt_dir / BEST if resumed_best else None,
        best_model_dir=run_dir / "best_model" if resumed_best else None,
    )
    try:
        while state.step < total_steps:
            train_one_epoch(run)
    finally:
        run.bar.close()
        run.metrics.close()

    model_dir = None
    if dinfo.is_main:
        model_dir = run_dir / "model"
        model.save_pretrained(model_dir)
    return TrainResult(
        run_dir=run_dir,
        last_checkpoint=run.last_ckpt,
        best_checkpoint=run.best_ckpt,
        model_dir=model_dir,
        best_model_dir=run.best_model_dir,
        best_metric=state.best,
        global_step=state.step,
        history=run.metrics.history,
        skipped=run.skipped,
        model=model,
    )


def _device(cfg: TrainConfig, dinfo: DistInfo) -> torch.device:
    """The config's device in one process, the rank's under torch.distributed; deterministic kernels on CUDA when
    asked."""
    device = torch.device(cfg.device) if (cfg.device and dinfo.world_size == 1) else dinfo.device
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (GradScaler); use bf16 on CPU")
    if cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def _prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """On ``device``, in train mode, with gradient checkpointing and a frozen text tower as configured."""
    model = model.to(device)
    model.train()
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.freeze_text:
        for p in model.text.parameters():
            p.requires_grad_(False)
    return model


__all__ = [
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "TrainResult",
    "batch_streams",
    "build_model",
    "contrastive_loss",
    "embed_batch",
    "model_config_for",
    "train",
]
