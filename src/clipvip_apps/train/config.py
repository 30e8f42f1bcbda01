"""``TrainConfig``: one flat dataclass for both stages, read from YAML with ``--set key=value`` overrides.

The resolved config is written to the run folder (``config.yaml``) and stored in every checkpoint, so a run can
always be reproduced and resumed from what it recorded.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clipvip.io import atomic_write_text

Stage = Literal["pretrain", "finetune"]
Precision = Literal["fp32", "bf16", "fp16"]


# Keys of earlier releases, so an old config gets one line naming the new key instead of "unknown key".
RENAMED_KEYS: dict[str, str] = {"ocl_variant": "ocl_objective"}  # "variant" is the vision tower's word


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults follow the paper (Sec. 5.1) where it states a value."""

    stage: Stage = "finetune"
    run_dir: str = "runs/clipvip"

    # Model: ``init`` is any checkpoint ``clipvip.load`` reads (a plain CLIP checkpoint becomes ViP);
    # without it a randomly initialised ``arch`` ("tiny", "B/32", "B/16") is built.
    init: str | None = None
    arch: str = "tiny"
    variant: str = "vip"
    num_frames: int | None = None  # None: the model config's own

    # Data: keyword arguments for ``clipvip.data.PretrainDataset`` / ``RetrievalDataset`` (CLI only; the
    # programmatic API takes dataset objects).
    train_data: dict[str, Any] = field(default_factory=dict)
    eval_data: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    context_length: int = 77

    # Loss: OCL objective (the paper's variants (a)-(d), or "vs") for pretraining; "infonce" or "dsl" for fine-tuning.
    ocl_objective: str = "d"
    finetune_loss: str = "infonce"
    dsl_temp: float = 1000.0

    # Optimisation (AdamW, cosine with linear warm-up).
    batch_size: int = 128  # per rank, per micro-batch; the contrastive matrix spans batch_size * world_size
    grad_accum: int = 1
    epochs: int = 5
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    lr: float = 1e-6
    # lr of the parameters a video variant adds to an image CLIP (proxies, temporal table, seqTransf head; see
    # ``clipvip_apps.train.optim.NEW_PARAM_NAME_PARTS``), like CLIP-ViP's ``new_lr``. None: the same as ``lr``.
    new_param_lr: float | None = None
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1  # used when warmup_steps is None
    min_lr_ratio: float = 0.0
    clip_grad_norm: float | None = 1.0

    # Speed / memory.
    precision: Precision = "fp32"  # bf16: autocast on CPU and GPU; fp16: GPU only, with GradScaler
    grad_checkpointing: bool = False
    # GradCache (clipvip.gradcache): embed each micro-batch in chunks of this many samples and still get the exact
    # gradient of the whole (gathered) batch's loss, so batch_size can exceed what fits in memory. None: off.
    grad_cache_chunk: int | None = None
    freeze_text: bool = False
    device: str | None = None  # None: CUDA if available

    # Reproducibility, logging, checkpoints, validation.
    seed: int = 42
    deterministic: bool = True
    log_every: int = 10
    save_every: int | None = 500  # optimizer steps; a checkpoint is also written after every epoch and at the end
    eval_every: int | None = None  # optimizer steps; None: after every epoch (when an eval set is given)
    eval_batch_size: int = 64
    best_metric: str = "t2v/R@1"  # key into the flattened ``evaluate_retrieval`` result (higher is better)

    def __post_init__(self) -> None:
        if self.stage not in ("pretrain", "finetune"):
            raise ValueError(f"stage must be 'pretrain' or 'finetune', got {self.stage!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        from clipvip.losses import FINETUNE_LOSSES, OCL_OBJECTIVES

        if self.ocl_objective not in OCL_OBJECTIVES:
            raise ValueError(f"ocl_objective must be one of {OCL_OBJECTIVES}, got {self.ocl_objective!r}")
        if self.finetune_loss not in FINETUNE_LOSSES:
            raise ValueError(f"finetune_loss must be one of {sorted(FINETUNE_LOSSES)}, got {self.finetune_loss!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        renamed = {old: new for old, new in RENAMED_KEYS.items() if old in d}
        if renamed:
            raise ValueError(
                f"{source}: " + "; ".join(f"{old!r} is now called {new!r}" for old, new in renamed.items())
            )
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown train config keys: {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        for f in dataclasses.fields(cls):
            # YAML 1.1 reads "3e-4" (no dot) as a string: coerce numeric fields, naming the key on failure.
            v = d.get(f.name)
            if isinstance(v, str) and ("float" in str(f.type) or str(f.type).startswith("int")):
                try:
                    d[f.name] = float(v) if "float" in str(f.type) else int(v)
                except ValueError as e:
                    raise ValueError(f"{source}: {f.name} must be a number, got {v!r}") from e
        return cls(**d)

    def save_yaml(self, path: str | Path) -> None:
        """Atomic write of the resolved config."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# ``{root}``, ``{video_id}``: str.format fields of a path template (YAML would read ``{root}`` as a set).
_TEMPLATE_FIELD = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def parse_value(raw: str) -> Any:
    """One ``--set`` value: YAML when it reads unambiguously as YAML (1e-5, true, null, [0.9, 0.98], {a: 1}), else
    the text itself. Kept as text: path templates with ``{field}``, brace expressions (``{a,b}``, ``{000..099}``),
    anything YAML cannot parse, a bare ``a: b`` (a mapping must be written in braces) and ``12:30`` (YAML 1.1 would
    read a base-60 number)."""
    text = raw.strip()
    if not text:
        return ""
    if _TEMPLATE_FIELD.search(text):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict) and (not text.startswith("{") or (value and all(v is None for v in value.values()))):
        return text  # "a: b", or a brace expression such as {00000..00099} (YAML's set syntax)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and ":" in text:
        return text
    if isinstance(value, str):
        return value if text[0] in "'\"" else text  # a quoted YAML string loses its quotes; else verbatim
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` (see ``parse_value``); ``a.b=v`` sets a nested key."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set {item!r}: empty key (expected key=value or a.b=value)")
    return key, parse_value(raw)


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = dict(d)
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML preset (a path, or the name of a bundled preset such as ``finetune_msrvtt``) and apply
    ``key=value`` overrides."""
    d: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        p = resolve_preset(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of train config keys")
        d = loaded
    return TrainConfig.from_dict(apply_overrides(d, overrides or []), source=source)


PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    bundled = PRESET_DIR / f"{Path(str(path)).stem}.yaml"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(f"{p}: no such config file (bundled presets: {', '.join(preset_names())})")
