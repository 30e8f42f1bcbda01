"""A content hash of a model, shared by the embedding cache and the video index.

A path alone does not tell whether the weights behind it changed, so caches and indexes key on the config and
every parameter/buffer byte instead."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import torch
from torch import nn


def model_fingerprint(model: nn.Module, ignore_config: Iterable[str] = ()) -> str:
    """sha256 hex digest of ``model.config`` (minus ``ignore_config`` keys) and its state dict, sorted by name."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict() if hasattr(config, "to_dict") else {"repr": repr(config)}
        skip = set(ignore_config)
        h.update(json.dumps({k: v for k, v in cfg.items() if k not in skip}, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
