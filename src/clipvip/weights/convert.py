"""Rename tables from the CLIP weight layouts we read into ours, and architecture inference from shapes.

Our layout is OpenAI's with the text tower under ``text.`` and fused ``attn.qkv`` / ``attn.proj`` / ``mlp.fc`` /
``mlp.proj`` names. Each converter is a pure function ``state dict -> (ModelConfig, state dict)``; loading then
adapts to the requested variant and checks keys strictly.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch

from clipvip.config import ModelConfig, TextConfig, VisionConfig
from clipvip.weights.io import CheckpointError, StateDict

log = logging.getLogger(__name__)

_OPENAI_BLOCK = [
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("mlp.c_fc.", "mlp.fc."),
    ("mlp.c_proj.", "mlp.proj."),
]
# Ints in OpenAI's TorchScript archives, and the causal-mask buffer traced modules keep: derived, not learned.
_OPENAI_DROP = {"input_resolution", "context_length", "vocab_size", "attn_mask"}

_HF_TOP = [  # (HF prefix, ours) applied in order; first match wins
    ("text_model.embeddings.token_embedding.", "text.token_embedding."),
    ("text_model.final_layer_norm.", "text.ln_final."),
    ("text_model.encoder.layers.", "text.transformer.resblocks."),
    ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
]
_HF_BLOCK = [
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.proj."),
    ("mlp.fc1.", "mlp.fc."),
    ("mlp.fc2.", "mlp.proj."),
]


def _count_layers(sd: StateDict, prefix: str, suffix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\." + re.escape(suffix))
    return len({m.group(1) for k in sd if (m := pat.match(k))})


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if old in key:
            return key.replace(old, new)
    return key


# --------------------------------------------------------------------------- attention heads

# The weights fix every width but not how a width is cut into heads: q/k/v are one [3W, W] matrix either way.
# OpenAI's ``build_model`` uses 64-dim heads for both towers, and so do CLIP-ViP (initialised from OpenAI CLIP) and
# Hugging Face CLIP folders (whose config.json names the count). open_clip models may not (ViT-H-14: head_width 80),
# and a wrong count gives a DIFFERENT function with the same weights (cosine 0.87 against open_clip's own, issue #15).
OPENAI_HEAD_DIM = 64


@dataclass(frozen=True)
class Heads:
    """Attention head counts of the vision and text towers."""

    vision: int
    text: int

    @classmethod
    def parse(cls, spec: str) -> Heads:
        """``"12,8"`` (vision, text) -> Heads(12, 8); the ``--heads`` option."""
        try:
            v, t = (int(x) for x in spec.split(","))
        except ValueError:
            raise ValueError(f"--heads {spec!r}: expected VISION,TEXT head counts, e.g. 12,8") from None
        if v < 1 or t < 1:
            raise ValueError(f"--heads {spec!r}: head counts must be >= 1")
        return cls(v, t)


def heads_from_open_clip_config(cfg: dict[str, Any]) -> Heads:
    """Head counts from an open_clip model config (``open_clip.get_model_config(name)``, or the ``model_cfg`` of an
    ``open_clip_config.json`` as open_clip's hub repos ship it), with open_clip's own defaults."""
    cfg = cfg.get("model_cfg", cfg)
    vc, tc = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "width" not in vc or "width" not in tc:
        raise CheckpointError("open_clip config without vision_cfg.width / text_cfg.width")
    return Heads(vision=vc["width"] // vc.get("head_width", 64), text=tc.get("heads", 8))


def heads_from_open_clip_name(name: str) -> Heads:
    """Head counts of a named open_clip architecture (``ViT-B-32``, ``ViT-H-14``...), from open_clip's registry."""
    try:
        import open_clip
    except ImportError:
        raise CheckpointError(
            f"open_clip model {name!r}: install open_clip_torch (pip install 'clipvip[clip]')"
        ) from None
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise CheckpointError(f"unknown open_clip model {name!r} (see open_clip.list_models())")
    return heads_from_open_clip_config(cfg)


def _openai_heads(vision_width: int, text_width: int, source: str) -> Heads:
    """64-dim heads, OpenAI's rule; refused where no 64-dim split exists."""
    for tower, w in (("vision", vision_width), ("text", text_width)):
        if w % OPENAI_HEAD_DIM:
            raise CheckpointError(
                f"{source}: {tower} width {w} is not a multiple of {OPENAI_HEAD_DIM}, so its head count cannot be "
                "OpenAI's; pass --heads VISION,TEXT or --open-clip-model NAME"
            )
    return Heads(vision_width // OPENAI_HEAD_DIM, text_width // OPENAI_HEAD_DIM)


# --------------------------------------------------------------------------- OpenAI / open_clip


def is_openai_layout(sd: StateDict) -> bool:
    return "visual.conv1.weight" in sd and "token_embedding.weight" in sd


def is_openai_release(sd: StateDict) -> bool:
    """OpenAI's own TorchScript archives keep ints (``input_resolution``...) that open_clip's state dicts do not."""
    return "input_resolution" in sd and "context_length" in sd


def convert_openai(
    sd: StateDict, act: str = "quick_gelu", heads: Heads | None = None, source: str = "checkpoint"
) -> tuple[ModelConfig, StateDict]:
    """OpenAI CLIP / open_clip ViT state dict -> ours. ``act`` cannot be read from weights: OpenAI models use
    QuickGELU, most open_clip-trained ones GELU. ``heads`` cannot either (see ``Heads``): OpenAI's releases use
    64-dim heads; for an open_clip state dict pass them (or its model name) - without them 64-dim heads are
    assumed with a warning, and refused where the width has no 64-dim split."""
    if "visual.conv1.weight" not in sd:
        raise CheckpointError(
            "not an OpenAI/open_clip ViT checkpoint (no visual.conv1.weight; ResNet CLIPs are unsupported)"
        )
    vw = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    tw = sd["ln_final.weight"].shape[0]
    if heads is None:
        heads = _openai_heads(vw, tw, source)
        if not is_openai_release(sd):
            log.warning(
                "%s: an open_clip state dict does not record its head counts; assuming 64-dim heads "
                "(vision %d, text %d) as OpenAI CLIP and open_clip's ViT-B/L do. If this model has other heads "
                "(e.g. ViT-H-14), pass --heads VISION,TEXT or --open-clip-model NAME",
                source,
                heads.vision,
                heads.text,
            )
    vision = VisionConfig(
        image_size=patch * grid,
        patch_size=patch,
        width=vw,
        layers=_count_layers(sd, "visual.transformer.resblocks.", "attn.in_proj_weight"),
        heads=heads.vision,
        mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vw,
    )
    text = TextConfig(
        vocab_size=sd["token_embedding.weight"].shape[0],
        context_length=sd["positional_embedding"].shape[0],
        width=tw,
        layers=_count_layers(sd, "transformer.resblocks.", "attn.in_proj_weight"),
        heads=heads.text,
        mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / tw,
    )
    cfg = ModelConfig(embed_dim=sd["text_projection"].shape[1], vision=vision, text=text, act=act, variant="meanpool")
    out: StateDict = {}
    for k, v in sd.items():
        if k in _OPENAI_DROP:
            continue
        nk = _rename(k, _OPENAI_BLOCK)
        if not (nk.startswith("visual.") or nk == "logit_scale"):
            nk = "text." + nk
        out[nk] = v
    return cfg, out


# --------------------------------------------------------------------------- Hugging Face CLIP / official CLIP-ViP


def _hf_to_ours(sd: StateDict, prefix: str = "") -> StateDict:
    sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue  # a non-persistent buffer in newer transformers, saved by older ones
        if k == "visual_projection.weight":
            out["visual.proj"] = v.T.contiguous()
        elif k == "text_projection.weight":
            out["text.text_projection"] = v.T.contiguous()
        elif k == "logit_scale":
            out[k] = v
        elif k == "vision_model.embeddings.class_embedding":
            out["visual.class_embedding"] = v
        elif k == "vision_model.embeddings.position_embedding.weight":
            out["visual.positional_embedding"] = v
        elif k == "text_model.embeddings.position_embedding.weight":
            out["text.positional_embedding"] = v
        elif k == "vision_model.embeddings.added_cls":
            out["visual.added_proxies"] = v
        elif k == "vision_model.embeddings.temporal_embedding":
            out["visual.temporal_embedding"] = v.reshape(v.shape[-2], v.shape[-1])
        elif (m := re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", k)) is not None:
            qkv.setdefault(f"{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = v
        else:
            out[_rename(_rename(k, _HF_TOP), _HF_BLOCK)] = v
    for k, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete q/k/v projections for {k}: have {sorted(parts)}")
        out[_rename(k, _HF_TOP)] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _config_from_ours(sd: StateDict, act: str, variant: str, heads: Heads) -> ModelConfig:
    """Infer the architecture from shapes of a state dict already in our layout; ``heads`` cannot be inferred."""
    vw = sd["visual.conv1.weight"].shape[0]
    tw = sd["text.ln_final.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    kw: dict[str, Any] = {}
    if "visual.added_proxies" in sd:
        kw["num_proxies"] = sd["visual.added_proxies"].shape[0] + 1
        kw["temporal_size"] = sd["visual.temporal_embedding"].shape[0]
    return ModelConfig(
        embed_dim=sd["text.text_projection"].shape[1],
        vision=VisionConfig(
            image_size=patch * grid,
            patch_size=patch,
            width=vw,
            layers=_count_layers(sd, "visual.transformer.resblocks.", "attn.qkv.weight"),
            heads=heads.vision,
            mlp_ratio=sd["visual.transformer.resblocks.0.mlp.fc.weight"].shape[0] / vw,
        ),
        text=TextConfig(
            vocab_size=sd["text.token_embedding.weight"].shape[0],
            context_length=sd["text.positional_embedding"].shape[0],
            width=tw,
            layers=_count_layers(sd, "text.transformer.resblocks.", "attn.qkv.weight"),
            heads=heads.text,
            mlp_ratio=sd["text.transformer.resblocks.0.mlp.fc.weight"].shape[0] / tw,
        ),
        act=act,
        variant=variant,
        **kw,
    )


def convert_hf(sd: StateDict, hf_config: dict[str, Any]) -> tuple[ModelConfig, StateDict]:
    """A Hugging Face ``CLIPModel`` state dict + its config.json -> ours."""
    tc, vc = hf_config["text_config"], hf_config["vision_config"]
    act = vc.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise CheckpointError(f"unsupported hidden_act {act!r} in HF config")
    cfg = ModelConfig(
        embed_dim=hf_config.get("projection_dim", 512),
        vision=VisionConfig(
            image_size=vc["image_size"],
            patch_size=vc["patch_size"],
            width=vc["hidden_size"],
            layers=vc["num_hidden_layers"],
            heads=vc["num_attention_heads"],
            mlp_ratio=vc["intermediate_size"] / vc["hidden_size"],
        ),
        text=TextConfig(
            vocab_size=tc["vocab_size"],
            context_length=tc["max_position_embeddings"],
            width=tc["hidden_size"],
            layers=tc["num_hidden_layers"],
            heads=tc["num_attention_heads"],
            mlp_ratio=tc["intermediate_size"] / tc["hidden_size"],
        ),
        act=act,
        layer_norm_eps=vc.get("layer_norm_eps", 1e-5),
        variant="meanpool",
    )
    return cfg, _hf_to_ours(sd)


def is_official_clipvip(sd: StateDict) -> bool:
    return any(k.startswith("clipmodel.") for k in sd)


def convert_official(
    sd: StateDict, heads: Heads | None = None, source: str = "checkpoint"
) -> tuple[ModelConfig, StateDict]:
    """The official CLIP-ViP release (``VidCLIP`` wrapper, keys ``clipmodel.<HF CLIP name>``) -> ours.
    It carries no config: the architecture comes from shapes; activation is QuickGELU and heads are 64-dim (it
    starts from OpenAI CLIP). A file with only some of the ViP parameters is refused (``check_vip_keys``)."""
    other = sorted(k for k in sd if not k.startswith("clipmodel."))
    if other:
        raise CheckpointError(f"{source}: official CLIP-ViP checkpoint has keys outside 'clipmodel.': {other[:10]}")
    ours = _hf_to_ours(sd, prefix="clipmodel.")
    check_vip_keys(ours, source, names=OFFICIAL_VIP_KEYS)
    variant = "vip" if has_proxies(ours) else "meanpool"
    vw, tw = ours["visual.conv1.weight"].shape[0], ours["text.ln_final.weight"].shape[0]
    return _config_from_ours(ours, "quick_gelu", variant, heads or _openai_heads(vw, tw, source)), ours


# --------------------------------------------------------------------------- variant adaptation


# The parameters a Video Proxy ViT adds to CLIP, in our layout, and as the official release names them.
VIP_KEYS = ("visual.added_proxies", "visual.temporal_embedding")
OFFICIAL_VIP_KEYS = {
    "visual.added_proxies": "clipmodel.vision_model.embeddings.added_cls",
    "visual.temporal_embedding": "clipmodel.vision_model.embeddings.temporal_embedding",
}


def has_proxies(sd: StateDict) -> bool:
    return "visual.added_proxies" in sd


def check_vip_keys(sd: StateDict, source: str, names: dict[str, str] | None = None) -> None:
    """A checkpoint has all of the ViP parameters or none of them. With some but not all it is a broken or
    truncated ViP checkpoint: loading it as plain CLIP would silently replace trained proxies or temporal
    embeddings with fresh ones (how "R@1 = 0 after loading" starts, XPretrain #43), so it is refused.
    ``names`` maps our key names to the file's own, for the message."""
    present = [k for k in VIP_KEYS if k in sd]
    if present and len(present) < len(VIP_KEYS):
        name = names or {}
        missing = [name.get(k, k) for k in VIP_KEYS if k not in sd]
        have = [name.get(k, k) for k in present]
        raise CheckpointError(
            f"{source}: a partial CLIP-ViP checkpoint: it has {', '.join(have)} but is missing "
            f"{', '.join(missing)} (a truncated or wrongly exported file; re-export it whole)"
        )


def adapt_to_variant(sd: StateDict, cfg: ModelConfig, seed: int = 0) -> StateDict:
    """Fill or drop the parameters that differ between variants, explicitly and with a log line each.

    - plain CLIP -> vip/fullattn: added proxies start as copies of CLS, the temporal table as zeros (so the first
      forward pass of every frame's patches equals CLIP's up to the extra proxies).
    - -> seqtransf without a head: CLIP4Clip's init, the first ``seq_layers`` text blocks and text positions
      (when the embedding width equals the text width), else a seeded random head.
    - a parameter the target variant does not have is dropped with a warning.
    """
    sd = dict(sd)
    W = sd["visual.conv1.weight"].shape[0]
    wants_proxies = cfg.variant in ("vip", "fullattn")
    check_vip_keys(sd, "state dict")
    if wants_proxies and not has_proxies(sd):
        cls = sd["visual.class_embedding"]
        sd["visual.added_proxies"] = cls[None].repeat(cfg.num_proxies - 1, 1).clone()
        sd["visual.temporal_embedding"] = torch.zeros(cfg.temporal_size, W)
        log.warning(
            "plain CLIP weights (no video proxies) adapted to %s: %d added proxies copied from CLS and a zero "
            "temporal table [%d, %d]; this is zero-shot CLIP-as-ViP, not a post-pretrained CLIP-ViP",
            cfg.variant,
            cfg.num_proxies - 1,
            cfg.temporal_size,
            W,
        )
    if not wants_proxies and has_proxies(sd):
        log.warning("variant %s has no video proxies: dropping added_proxies and temporal_embedding", cfg.variant)
        sd.pop("visual.added_proxies")
        sd.pop("visual.temporal_embedding")
    seq_keys = [k for k in sd if k.startswith("visual.seq_head.")]
    if cfg.variant == "seqtransf" and not seq_keys:
        sd.update(_init_seq_head(sd, cfg, seed))
    if cfg.variant != "seqtransf" and seq_keys:
        log.warning("variant %s has no seqtransf head: dropping %d keys", cfg.variant, len(seq_keys))
        for k in seq_keys:
            sd.pop(k)
    return sd


def _init_seq_head(sd: StateDict, cfg: ModelConfig, seed: int) -> StateDict:
    from clipvip.model.vision import SeqTransformerHead

    torch.manual_seed(seed)
    head = SeqTransformerHead(cfg).state_dict()
    tw = sd["text.ln_final.weight"].shape[0]
    text_layers = _count_layers(sd, "text.transformer.resblocks.", "attn.qkv.weight")
    if tw == cfg.embed_dim and text_layers >= cfg.seq_layers:
        for k in head:
            if k.startswith("transformer."):
                head[k] = sd["text." + k].clone()
        pos = sd["text.positional_embedding"]
        n = min(pos.shape[0], head["frame_position_embeddings"].shape[0])
        head["frame_position_embeddings"][:n] = pos[:n]
        log.info("seqtransf head initialised from the first %d text blocks (CLIP4Clip)", cfg.seq_layers)
    else:
        log.info("seqtransf head randomly initialised (embed width %d != text width %d)", cfg.embed_dim, tw)
    return {"visual.seq_head." + k: v for k, v in head.items()}
