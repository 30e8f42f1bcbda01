"""One trainer for both stages: OCL post-pretraining and retrieval fine-tuning (paper Sec. 4.3, 5.1).

The train package, one concept per module: ``step`` (a step's streams, embeddings, loss and GradCache step),
``data`` (sampler, data sets from a config), ``checkpoint``, ``optim``, ``config``; this module is the loop.

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

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from clipvip.data import SkipCounter
from clipvip.distributed import DistInfo, init_distributed
from clipvip.gradcache import GradCache, average_gradients
from clipvip_apps.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, seed_everything
from clipvip_apps.train.config import TrainConfig
from clipvip_apps.train.data import ResumableBatchSampler, all_ranks_have_data, build_datasets, default_collate
from clipvip_apps.train.metrics import MetricsLog, flatten_metrics
from clipvip_apps.train.optim import adamw, build_scheduler, param_groups
from clipvip_apps.train.step import Embedder, autocast, batch_streams, contrastive_loss, embed_batch, grad_cache_step

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; training stopped and the last good checkpoint was kept."""


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


# ------------------------------------------------------------------------------------------------ helpers


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
    device = torch.device(cfg.device) if (cfg.device and dinfo.world_size == 1) else dinfo.device
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (GradScaler); use bf16 on CPU")
    if cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)

    seed_everything(cfg.seed)
    if model is None:
        model = build_model(cfg)
    model = model.to(device)
    model.train()
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.freeze_text:
        for p in model.text.parameters():
            p.requires_grad_(False)

    if train_dataset is None:
        train_dataset, built_eval = build_datasets(cfg, getattr(model, "config", None))
        eval_dataset = eval_dataset if eval_dataset is not None else built_eval
    # the run folder only once the model and data are known to load: a config mistake leaves no stray run folder
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if dinfo.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(run_dir / "config.yaml")
    collate = collate_fn or default_collate()
    if eval_dataset is not None and evaluate_fn is None:
        from clipvip.eval.retrieval import evaluate_retrieval

        def evaluate_fn(m: nn.Module, ds: Any, batch_size: int) -> dict[str, Any]:
            return evaluate_retrieval(
                m,
                ds,
                batch_size=batch_size,
                num_workers=cfg.num_workers,
                context_length=cfg.context_length,
                progress=False,
            )

    iterable = isinstance(train_dataset, IterableDataset)
    sampler: ResumableBatchSampler | None = None
    if iterable:
        if cfg.max_steps is None:
            raise ValueError("a streaming (iterable) training set has no length: set max_steps")
        steps_per_epoch = None
    else:
        sampler = ResumableBatchSampler(len(train_dataset), cfg.batch_size, cfg.seed, dinfo.rank, dinfo.world_size)
        steps_per_epoch = sampler.num_batches // cfg.grad_accum
        if steps_per_epoch == 0:
            raise ValueError(
                f"training set of {len(train_dataset)} samples is smaller than one optimizer step "
                f"(batch_size {cfg.batch_size} x world {dinfo.world_size} x grad_accum {cfg.grad_accum})"
            )
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total_steps)

    groups = param_groups(model, cfg.weight_decay, lr=cfg.lr, new_param_lr=cfg.new_param_lr)
    optimizer = adamw(groups, cfg.lr, cfg.betas, cfg.eps, device)
    scheduler = build_scheduler(optimizer, total_steps, warmup, cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")

    embedder: nn.Module = Embedder(model, cfg)
    grad_cache = GradCache(cfg.grad_cache_chunk) if cfg.grad_cache_chunk else None
    if dinfo.distributed and grad_cache is None:
        embedder = nn.parallel.DistributedDataParallel(
            embedder, device_ids=[device.index] if device.type == "cuda" else None
        )

    step, epoch, batch_in_epoch = 0, 0, 0
    best: float | None = None
    if resume:
        ck = load_checkpoint(ckpt_dir / LAST)
        model.load_state_dict(ck["model"], strict=True)
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        best = ck.get("best_metric")
        restore_rng(ck["rng"][dinfo.rank] if isinstance(ck["rng"], list) else ck["rng"])
        log.info("resumed %s at step %d (epoch %d, batch %d)", ckpt_dir / LAST, step, epoch, batch_in_epoch)
    else:
        seed_everything(cfg.seed + dinfo.rank)

    metrics = MetricsLog(run_dir, dinfo.is_main, keep_up_to_step=step if resume else None)
    last_ckpt: Path | None = ckpt_dir / LAST if resume else None
    best_ckpt: Path | None = ckpt_dir / BEST if (ckpt_dir / BEST).exists() and resume else None
    best_model_dir: Path | None = run_dir / "best_model" if best_ckpt else None
    skipped_total = 0

    def state(rng_all: Any) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_all,
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "best_metric": best,
            "config": cfg.to_dict(),
        }

    def gathered_rng() -> Any:
        rng = capture_rng()
        if not dinfo.distributed:
            return rng
        out: list[Any] = [None] * dinfo.world_size
        torch.distributed.all_gather_object(out, rng)
        return out

    def checkpoint(name: str) -> Path:
        rng = gathered_rng()
        path = ckpt_dir / name
        if dinfo.is_main:
            save_checkpoint(path, state(rng))
        if dinfo.distributed:
            torch.distributed.barrier()
        return path

    def validate() -> dict[str, float]:
        res: dict[str, float] = {}
        if dinfo.is_main:
            model.eval()
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                res = flatten_metrics(evaluate_fn(model, eval_dataset, batch_size=cfg.eval_batch_size))
            model.train()
        if dinfo.distributed:
            box = [res]
            torch.distributed.broadcast_object_list(box, src=0)
            res = box[0]
        return res

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and dinfo.is_main),
        desc=f"{cfg.stage}",
        unit="step",
        dynamic_ncols=True,
    )
    global_bs = cfg.batch_size * dinfo.world_size * cfg.grad_accum
    try:
        while step < total_steps:
            if hasattr(train_dataset, "set_epoch"):
                train_dataset.set_epoch(epoch)
            loader_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            if sampler is not None:
                sampler.set_epoch(epoch, batch_in_epoch, steps_per_epoch * cfg.grad_accum)
                loader = DataLoader(
                    train_dataset,
                    batch_sampler=sampler,
                    collate_fn=collate,
                    num_workers=cfg.num_workers,
                    generator=loader_gen,
                    pin_memory=device.type == "cuda",
                    persistent_workers=False,
                )
            else:
                loader = DataLoader(
                    train_dataset,
                    batch_size=cfg.batch_size,
                    collate_fn=collate,
                    drop_last=True,
                    num_workers=cfg.num_workers,
                    generator=loader_gen,
                    pin_memory=device.type == "cuda",
                )
            it = iter(loader)
            if sampler is None and batch_in_epoch:
                # A stream cannot seek: fast-forward the consumed batches; the RNG states restored from the
                # checkpoint already account for them, so shield them from the replay.
                rng = capture_rng()
                for _ in range(batch_in_epoch):
                    next(it)
                restore_rng(rng)
            this_epoch, steps_before = epoch, step
            skips = SkipCounter()
            micro, consumed, loss_sum, t0, exhausted = 0, 0, 0.0, time.perf_counter(), False
            while step < total_steps:
                try:
                    batch = next(it)
                except StopIteration:
                    exhausted = True
                    break
                skipped_total += skips.update(batch)
                consumed += 1
                if not all_ranks_have_data(batch, dinfo):
                    continue  # an all-bad batch (on any rank): every rank skips it, the data position advances
                micro += 1
                last_micro = micro == cfg.grad_accum
                sync = contextlib.nullcontext() if (last_micro or not dinfo.distributed) else embedder.no_sync()
                if grad_cache is not None:
                    loss = grad_cache_step(grad_cache, model, batch, cfg, scaler, device)
                else:
                    with sync:
                        with autocast(device, cfg.precision):
                            embs, logit_scale = embedder(batch)
                        loss = contrastive_loss(embs, logit_scale, cfg)
                        if torch.isfinite(loss):
                            scaler.scale(loss / cfg.grad_accum).backward()
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at optimizer step {step + 1} (epoch {epoch}, batch "
                        f"{batch_in_epoch + consumed - 1}); stopped. The last good checkpoint is "
                        f"{last_ckpt if last_ckpt else 'none (no checkpoint was written yet)'}"
                    )
                loss_sum += loss.item()
                if not last_micro:
                    continue
                if grad_cache is not None:
                    average_gradients(model.parameters())  # replaces DDP's all-reduce (no DDP with GradCache)
                if cfg.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm))
                else:
                    grad_norm = float("nan")
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                step += 1
                batch_in_epoch += consumed
                dt = time.perf_counter() - t0
                rec: dict[str, Any] = {
                    "step": step,
                    "epoch": epoch,
                    "loss": loss_sum / micro,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "logit_scale": float(model.logit_scale.detach().exp()),
                    "samples_per_s": global_bs / dt if dt > 0 else float("inf"),
                }
                micro, consumed, loss_sum = 0, 0, 0.0
                end_of_epoch = sampler is not None and batch_in_epoch >= steps_per_epoch * cfg.grad_accum
                do_eval = eval_dataset is not None and (
                    (cfg.eval_every and step % cfg.eval_every == 0)
                    or (not cfg.eval_every and end_of_epoch)
                    or step == total_steps
                )
                if do_eval:
                    res = validate()
                    if cfg.best_metric not in res:
                        raise ValueError(f"best_metric {cfg.best_metric!r} not in the eval result keys {sorted(res)}")
                    rec["eval"] = res
                    if best is None or res[cfg.best_metric] > best:
                        best = res[cfg.best_metric]
                        rec["new_best"] = True
                if end_of_epoch:  # the data position after this step is the start of the next epoch
                    epoch, batch_in_epoch = epoch + 1, 0
                if rec.get("new_best"):
                    best_ckpt = checkpoint(BEST)
                    best_model_dir = run_dir / "best_model"
                    if dinfo.is_main:
                        model.save_pretrained(best_model_dir)
                if (cfg.save_every and step % cfg.save_every == 0) or end_of_epoch or step == total_steps:
                    last_ckpt = checkpoint(LAST)
                    rec["checkpoint"] = str(last_ckpt)
                if step % max(1, cfg.log_every) == 0 or "eval" in rec or step == total_steps:
                    metrics.write(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}", sps=f"{rec['samples_per_s']:.1f}")
                for cb in callbacks:
                    cb(rec)
                t0 = time.perf_counter()
                if end_of_epoch:
                    break
            if dinfo.distributed:  # every rank's bad samples, so rank 0's summary and count cover the job
                parts: list[Any] = [None] * dinfo.world_size
                torch.distributed.all_gather_object(parts, (skips.items, skips.seen))
                skipped_total += sum(len(items) for items, _ in parts) - len(skips)
                skips = SkipCounter([x for items, _ in parts for x in items], sum(seen for _, seen in parts))
            if len(skips) and dinfo.is_main:
                msg = f"epoch {this_epoch}: {skips.summary()}"
                tqdm.write(msg)
                log.warning(msg)
            if exhausted:  # a stream ended (or the sampler ran out): next epoch
                if step == steps_before:
                    raise ValueError(f"epoch {this_epoch} of the training set yielded no complete optimizer step")
                optimizer.zero_grad(set_to_none=True)  # an incomplete accumulation group is dropped
                epoch, batch_in_epoch = epoch + 1, 0
    finally:
        bar.close()
        metrics.close()

    model_dir = None
    if dinfo.is_main:
        model_dir = run_dir / "model"
        model.save_pretrained(model_dir)
    return TrainResult(
        run_dir=run_dir,
        last_checkpoint=last_ckpt,
        best_checkpoint=best_ckpt,
        model_dir=model_dir,
        best_model_dir=best_model_dir,
        best_metric=best,
        global_step=step,
        history=metrics.history,
        skipped=skipped_total,
        model=model,
    )


__all__ = [
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "TrainResult",
    "batch_streams",
    "build_model",
    "contrastive_loss",
    "embed_batch",
    "train",
]
