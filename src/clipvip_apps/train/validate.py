"""Validation during training: when it is due, the default evaluator, and one evaluation shared by every rank.

WHY apart from the loop: the evaluation must not disturb training. It runs on rank 0 only, under a forked RNG (so
a run with validation draws the same training randomness as one without) and puts the model back in train mode;
the other ranks receive its result, so every rank takes the same best-checkpoint decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from clipvip.distributed import DistInfo
from clipvip_apps.train.config import TrainConfig
from clipvip_apps.train.metrics import flatten_metrics

EvaluateFn = Callable[..., dict[str, Any]]


def default_evaluate_fn(cfg: TrainConfig) -> EvaluateFn:
    """``clipvip.eval.evaluate_retrieval`` with the run's workers and context length."""
    from clipvip.eval.retrieval import evaluate_retrieval

    def evaluate(model: nn.Module, dataset: Any, batch_size: int) -> dict[str, Any]:
        return evaluate_retrieval(
            model,
            dataset,
            batch_size=batch_size,
            num_workers=cfg.num_workers,
            context_length=cfg.context_length,
            progress=False,
        )

    return evaluate


def eval_due(cfg: TrainConfig, step: int, total_steps: int, end_of_epoch: bool) -> bool:
    """Every ``eval_every`` steps (or at each epoch's end when unset), and after the last step."""
    return bool((cfg.eval_every and step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch)) or (
        step == total_steps
    )


def validate(
    model: nn.Module, evaluate_fn: EvaluateFn, dataset: Any, batch_size: int, dinfo: DistInfo
) -> dict[str, float]:
    """Flattened metrics ({"t2v/R@1": ...}) of ``evaluate_fn`` on ``dataset``, computed by rank 0 and broadcast
    (collective under torch.distributed: all ranks call it)."""
    res: dict[str, float] = {}
    if dinfo.is_main:
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            res = flatten_metrics(evaluate_fn(model, dataset, batch_size=batch_size))
        model.train()
    if dinfo.distributed:
        box = [res]
        torch.distributed.broadcast_object_list(box, src=0)
        res = box[0]
    return res


def best_score(res: dict[str, float], metric: str) -> float:
    """The score that picks the best checkpoint; a ``best_metric`` the evaluation does not report is a config
    error listing the keys it does."""
    if metric not in res:
        raise ValueError(f"best_metric {metric!r} not in the eval result keys {sorted(res)}")
    return res[metric]
