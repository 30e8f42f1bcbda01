"""AdamW parameter groups and the cosine-with-warm-up learning-rate schedule.

Weight decay choice (documented, as in CLIP / open_clip and the CLIP-ViP release): decay only the weight MATRICES
of linear / conv / projection layers. No decay on

- 1-D parameters: LayerNorm gains and biases, all biases, the log-space ``logit_scale``;
- embeddings and learned tokens: token / positional / temporal embeddings, the CLS embedding and the added video
  proxies (``added_proxies``), the seqTransf frame positions.

Decaying these would pull the temperature and the position / proxy tokens toward zero, which is a change of the
model rather than a regulariser.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAME_PARTS: tuple[str, ...] = ("embedding", "added_proxies", "logit_scale")


def uses_weight_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim >= 2 and not any(part in name for part in NO_DECAY_NAME_PARTS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups (decay / no decay) over the trainable parameters, in a stable order."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if uses_weight_decay(name, p) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``
    at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup_steps, min_ratio)
    )
