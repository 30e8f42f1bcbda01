"""The training loop: ``train_one_epoch`` (as open_clip_train's) over a ``TrainRun``, the run that ``train``
builds once.

One epoch: batches from the saved data position, skips counted, ``grad_accum`` micro-batches per optimizer step,
then per step: validation when due, best / last checkpoints, the metrics record, the progress bar, the callbacks.
The checkpoint is written AFTER validation (which runs under a forked RNG) and after the data position moves, so a
resumed run starts exactly where the straight run goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from clipvip.data import SkipCounter
from clipvip.distributed import DistInfo
from clipvip_apps.train.checkpoint import TrainState, save_train_state
from clipvip_apps.train.config import TrainConfig
from clipvip_apps.train.data import TrainData, all_ranks_have_data, gather_skips
from clipvip_apps.train.metrics import MetricsLog
from clipvip_apps.train.step import StepRunner
from clipvip_apps.train.validate import EvaluateFn, best_score, eval_due, validate

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; training stopped and the last good checkpoint was kept."""


@dataclass
class TrainRun:
    """One ``train()`` call: what the loop reads (config, ranks, data, step, evaluation, logs) and what it leaves
    behind (the checkpoints written, the samples skipped). ``state`` is what the loop advances."""

    cfg: TrainConfig
    dinfo: DistInfo
    run_dir: Path
    state: TrainState
    data: TrainData
    steps: StepRunner
    total_steps: int
    metrics: MetricsLog
    bar: tqdm
    eval_dataset: Any = None
    evaluate_fn: EvaluateFn | None = None
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()
    last_ckpt: Path | None = None
    best_ckpt: Path | None = None
    best_model_dir: Path | None = None
    skipped: int = 0  # samples the collate step dropped, over this call

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, name: str) -> Path:
        """Checkpoint the state as ``checkpoints/<name>`` (collective: every rank calls it)."""
        return save_train_state(self.ckpt_dir / name, self.state, self.cfg.to_dict(), self.dinfo)


def train_one_epoch(run: TrainRun) -> None:
    """Train from the state's data position to the end of its epoch (or to ``total_steps``).

    An epoch ends when a map-style set's last full step is done, or when a stream runs dry; then the state moves
    to the next epoch (an incomplete accumulation group is dropped). Raises ``NonFiniteLossError`` before a NaN/inf
    loss reaches the optimizer."""
    st, cfg = run.state, run.cfg
    this_epoch, steps_before = st.epoch, st.step
    batches = run.data.batches(st.epoch, st.batch_in_epoch, pin_memory=run.steps.device.type == "cuda")
    skips = SkipCounter()
    global_bs = cfg.batch_size * run.dinfo.world_size * cfg.grad_accum
    micro, consumed, loss_sum, t0, exhausted = 0, 0, 0.0, time.perf_counter(), True
    for batch in batches:
        run.skipped += skips.update(batch)
        consumed += 1
        if not all_ranks_have_data(batch, run.dinfo):
            continue  # an all-bad batch (on any rank): every rank skips it, the data position advances
        micro += 1
        loss = run.steps.micro_batch(batch, last=micro == cfg.grad_accum)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss} at optimizer step {st.step + 1} (epoch {st.epoch}, batch "
                f"{st.batch_in_epoch + consumed - 1}); stopped. The last good checkpoint is "
                f"{run.last_ckpt if run.last_ckpt else 'none (no checkpoint was written yet)'}"
            )
        loss_sum += loss
        if micro < cfg.grad_accum:
            continue
        lr, grad_norm = run.steps.update(st.optimizer, st.scheduler)
        st.step += 1
        st.batch_in_epoch += consumed
        dt = time.perf_counter() - t0
        rec: dict[str, Any] = {
            "step": st.step,
            "epoch": st.epoch,
            "loss": loss_sum / micro,
            "lr": lr,
            "grad_norm": grad_norm,
            "logit_scale": float(st.model.logit_scale.detach().exp()),
            "samples_per_s": global_bs / dt if dt > 0 else float("inf"),
        }
        micro, consumed, loss_sum = 0, 0, 0.0
        end_of_epoch = run.data.epoch_done(st.batch_in_epoch)
        finish_step(run, rec, end_of_epoch)
        t0 = time.perf_counter()
        if end_of_epoch or st.step >= run.total_steps:
            exhausted = False
            break
    report_skips(run, skips, this_epoch)
    if exhausted:  # a stream ended (or the sampler ran out): next epoch
        if st.step == steps_before:
            raise ValueError(f"epoch {this_epoch} of the training set yielded no complete optimizer step")
        st.optimizer.zero_grad(set_to_none=True)  # an incomplete accumulation group is dropped
        st.epoch, st.batch_in_epoch = st.epoch + 1, 0


def finish_step(run: TrainRun, rec: dict[str, Any], end_of_epoch: bool) -> None:
    """After an optimizer step: validate when due, move the data position, checkpoint (best, then last), log the
    record, advance the bar, call the callbacks (they see the record with its eval and checkpoint)."""
    st, cfg = run.state, run.cfg
    if run.eval_dataset is not None and eval_due(cfg, st.step, run.total_steps, end_of_epoch):
        res = validate(st.model, run.evaluate_fn, run.eval_dataset, cfg.eval_batch_size, run.dinfo)
        score = best_score(res, cfg.best_metric)
        rec["eval"] = res
        if st.best is None or score > st.best:
            st.best = score
            rec["new_best"] = True
    if end_of_epoch:  # the data position after this step is the start of the next epoch
        st.epoch, st.batch_in_epoch = st.epoch + 1, 0
    if rec.get("new_best"):
        run.best_ckpt = run.save(BEST)
        run.best_model_dir = run.run_dir / "best_model"
        if run.dinfo.is_main:
            st.model.save_pretrained(run.best_model_dir)
    if (cfg.save_every and st.step % cfg.save_every == 0) or end_of_epoch or st.step == run.total_steps:
        run.last_ckpt = run.save(LAST)
        rec["checkpoint"] = str(run.last_ckpt)
    if st.step % max(1, cfg.log_every) == 0 or "eval" in rec or st.step == run.total_steps:
        run.metrics.write(rec)
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}", sps=f"{rec['samples_per_s']:.1f}")
    for cb in run.callbacks:
        cb(rec)


def report_skips(run: TrainRun, skips: SkipCounter, epoch: int) -> None:
    """The epoch's bad samples over all ranks: added to the run's count, one line on rank 0 (collective)."""
    merged = gather_skips(skips, run.dinfo)
    run.skipped += len(merged) - len(skips)  # the other ranks' (this rank's were counted batch by batch)
    if len(merged) and run.dinfo.is_main:
        msg = f"epoch {epoch}: {merged.summary()}"
        tqdm.write(msg)
        log.warning(msg)
