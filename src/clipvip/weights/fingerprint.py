"""A content hash of a model, shared by the embedding cache and the video index.

A path alone does not tell whether the weights behind it changed, so caches and indexes key on the config and
every parameter/buffer byte instead."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

# Config fields that are reader settings, not part of the function the model computes: ``num_frames`` is how many
# frames a reader samples by default (the temporal table's size is ``temporal_size``). Caches, indexes and embedding
# folders record their own frame settings, so changing this default alone must not look like another model.
READER_SETTINGS: tuple[str, ...] = ("num_frames",)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 hex digest of ``model.config`` (minus ``READER_SETTINGS``) and its state dict, sorted by name: the one
    model identity that the eval cache, the video index and the embed job all record and compare."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict() if hasattr(config, "to_dict") else {"repr": repr(config)}
        skip = set(READER_SETTINGS)
        h.update(json.dumps({k: v for k, v in cfg.items() if k not in skip}, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def same_model(recorded: str, fingerprint: str) -> bool:
    """Whether a recorded fingerprint names this one. Indexes written before the fingerprints were unified hold
    its first 32 hex digits; any shorter record is not trusted."""
    return len(recorded) >= 32 and fingerprint.startswith(recorded)
