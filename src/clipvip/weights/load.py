"""``clipvip.load``: detect the checkpoint format -> convert to our layout -> adapt the variant -> strict load."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from clipvip.config import ModelConfig
from clipvip.model.clipvip import CONFIG_NAME, WEIGHTS_NAME, CLIPViP
from clipvip.weights.card import provenance
from clipvip.weights.convert import (
    Heads,
    adapt_to_variant,
    check_vip_keys,
    convert_hf,
    convert_official,
    convert_openai,
    heads_from_open_clip_config,
    is_official_clipvip,
    is_openai_layout,
)
from clipvip.weights.hub import resolve_model
from clipvip.weights.io import CheckpointError, StateDict, check_state_dict, read_state_dict

log = logging.getLogger(__name__)


def detect_format(path: str | Path) -> str:
    """One of ``clipvip`` (our folder), ``hf`` (a transformers CLIP folder), ``file`` (a single weights file)."""
    p = Path(path)
    if p.is_dir():
        cfg = p / CONFIG_NAME
        if not cfg.exists():
            raise CheckpointError(f"{p}: a checkpoint folder needs {CONFIG_NAME}")
        meta = json.loads(cfg.read_text())
        if "clipvip" in meta:
            return "clipvip"
        if meta.get("model_type") == "clip" or "CLIPModel" in meta.get("architectures", []):
            return "hf"
        raise CheckpointError(f"{cfg}: neither a clipvip config nor a Hugging Face CLIP config")
    if p.is_file():
        return "file"
    raise FileNotFoundError(f"{p}: no such checkpoint file or folder")


OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"  # what open_clip's hub repos ship beside the weights


def _open_clip_sidecar_heads(weights: Path) -> Heads | None:
    sidecar = weights.parent / OPEN_CLIP_CONFIG_NAME
    if not sidecar.is_file():
        return None
    heads = heads_from_open_clip_config(json.loads(sidecar.read_text()))
    log.info("%s: head counts %s from %s", weights, heads, sidecar)
    return heads


def read_checkpoint(
    path: str | Path, act: str | None = None, heads: Heads | None = None
) -> tuple[ModelConfig, StateDict, str]:
    """Read any supported checkpoint into (config, state dict in our layout, description).

    ``heads``: attention head counts, for the layouts that do not record them (bare open_clip state dicts; an
    ``open_clip_config.json`` beside the file is read when given none). A checkpoint with only some of the ViP
    parameters is refused, whatever its layout (``check_vip_keys``)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "clipvip":
        cfg = ModelConfig.load(p / CONFIG_NAME)
        sd, source = read_state_dict(p / WEIGHTS_NAME), f"{p} (clipvip folder)"
    elif fmt == "hf":
        weights = next((p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).exists()), None)
        if weights is None:
            raise CheckpointError(f"{p}: Hugging Face folder without model.safetensors or pytorch_model.bin")
        cfg, sd = convert_hf(read_state_dict(weights), json.loads((p / CONFIG_NAME).read_text()))
        source = f"{weights} (Hugging Face CLIP)"
    else:
        raw = read_state_dict(p)
        if is_official_clipvip(raw):
            cfg, sd = convert_official(raw, heads=heads, source=str(p))
            source = f"{p} (official CLIP-ViP release)"
        elif is_openai_layout(raw):
            heads = heads or _open_clip_sidecar_heads(p)
            cfg, sd = convert_openai(raw, act=act or "quick_gelu", heads=heads, source=str(p))
            source = f"{p} (OpenAI/open_clip CLIP)"
        else:
            sample = ", ".join(sorted(raw)[:8])
            raise CheckpointError(f"{p}: unrecognised checkpoint layout (first keys: {sample})")
    check_vip_keys(sd, source)
    return cfg, sd, source


def load(
    path: str | Path,
    variant: str | None = None,
    num_frames: int | None = None,
    act: str | None = None,
    heads: Heads | None = None,
) -> CLIPViP:
    """Load any supported checkpoint as a ``CLIPViP`` model, strictly.

    ``variant``: the vision tower to build (default: the checkpoint's own; plain CLIP weights default to ``vip``).
    ``num_frames``: frames the model samples by default; for plain CLIP weights also the temporal table size T0.
    ``act``: activation for bare OpenAI/open_clip state dicts, which cannot record it (default QuickGELU).
    ``heads``: attention head counts for bare open_clip state dicts, which cannot record them either.
    """
    origin = resolve_model(path)  # a hub id / open_clip NAME:TAG / URL -> a local path in that library's cache
    act, heads = act or origin.act, heads or origin.heads
    cfg, sd, source = read_checkpoint(origin.path, act, heads)
    plain_clip = "visual.added_proxies" not in sd and "visual.seq_head.frame_position_embeddings" not in sd
    target = variant or ("vip" if plain_clip and cfg.variant == "meanpool" else cfg.variant)
    updates: dict = {"variant": target}
    if act is not None:
        updates["act"] = act
    if num_frames is not None:
        updates["num_frames"] = num_frames
        if "visual.temporal_embedding" not in sd:
            updates["temporal_size"] = num_frames
    cfg = dataclasses.replace(cfg, **updates)
    sd = adapt_to_variant(sd, cfg)
    model = CLIPViP(cfg)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    model.provenance = provenance(origin, source, {"variant": target, "num_frames": num_frames, "act": act})
    log.info("loaded %s as variant=%s (%.1fM params)", source, target, model.num_params() / 1e6)
    return model.eval()


def convert(
    src: str | Path,
    dst: str | Path,
    variant: str | None = None,
    num_frames: int | None = None,
    act: str | None = None,
    heads: Heads | None = None,
) -> CLIPViP:
    """Any supported checkpoint -> our folder format (config.json + model.safetensors)."""
    model = load(src, variant=variant, num_frames=num_frames, act=act, heads=heads)
    model.save_pretrained(dst)
    return model
