"""The CLIP-ViP trainer (post-pretraining with OCL and retrieval fine-tuning), programmatic API.

    from clipvip_apps.train import TrainConfig, train
    result = train(TrainConfig(stage="finetune", run_dir="runs/x", max_steps=100), model, train_ds, eval_ds)
    result.best_checkpoint, result.model_dir, result.history

The CLI is ``clipvip train --config CONFIG.yaml [--set key=value ...] [--resume]``; presets live in
``clipvip_apps/configs``.
"""

from clipvip_apps.train.config import TrainConfig, apply_overrides, load_config, preset_names, resolve_preset
from clipvip_apps.train.optim import cosine_with_warmup, param_groups, uses_weight_decay
from clipvip_apps.train.trainer import (
    NonFiniteLossError,
    ResumableBatchSampler,
    TrainResult,
    batch_streams,
    build_model,
    contrastive_loss,
    embed_batch,
    model_config_for,
    train,
)

__all__ = [
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "batch_streams",
    "build_model",
    "contrastive_loss",
    "cosine_with_warmup",
    "embed_batch",
    "load_config",
    "model_config_for",
    "param_groups",
    "preset_names",
    "resolve_preset",
    "train",
    "uses_weight_decay",
]
