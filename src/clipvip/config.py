"""Dataclass configs. Every run saves the resolved config next to its outputs (``to_dict`` / ``from_dict``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Variant = Literal["vip", "meanpool", "seqtransf", "fullattn"]
VARIANTS: tuple[str, ...] = ("vip", "meanpool", "seqtransf", "fullattn")
Activation = Literal["quick_gelu", "gelu"]


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


@dataclass
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0


@dataclass
class ModelConfig:
    """Architecture of a CLIP-ViP model (and of its ablation baselines, chosen by ``variant``)."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    act: Activation = "quick_gelu"
    variant: Variant = "vip"
    num_proxies: int = 4  # M: CLIP's CLS + (M-1) added video proxies (vip / fullattn)
    temporal_size: int = 12  # T0: rows of the learned temporal embedding
    num_frames: int = 12  # frames a reader samples by default for this model
    seq_layers: int = 4  # seqtransf head depth (CLIP4Clip uses 4)
    seq_max_frames: int = 128  # seqtransf frame position table size
    layer_norm_eps: float = 1e-5
    logit_scale_init: float = 4.6052  # log(100), CLIP's trained value; log(1/0.07) for scratch training

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.act not in ("quick_gelu", "gelu"):
            raise ValueError(f"unknown activation {self.act!r}")
        if self.num_proxies < 1:
            raise ValueError("num_proxies must be >= 1 (proxy 0 is CLIP's CLS token)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"clipvip": self.to_dict()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        d = json.loads(Path(path).read_text())
        return cls.from_dict(d["clipvip"])


def tiny_config(variant: Variant = "vip", **kw: Any) -> ModelConfig:
    """A few-KB model for tests and the demo: same code paths, tiny widths."""
    vision = VisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2)
    text = TextConfig(vocab_size=49408, context_length=77, width=32, layers=2, heads=2)
    base: dict[str, Any] = dict(
        logit_scale_init=2.6593,  # log(1/0.07): CLIP's init for training from scratch
        embed_dim=32,
        vision=vision,
        text=text,
        variant=variant,
        temporal_size=4,
        num_frames=4,
        seq_layers=1,
    )
    base.update(kw)
    return ModelConfig(**base)
