"""The model card (``README.md``) next to a saved model, and the provenance it is written from.

A clipvip folder (``config.json`` + ``model.safetensors``) is what ``huggingface_hub.upload_folder`` uploads as a
model repo, and what ``clipvip.load("hf-hub:org/name")`` reads back; the card is what a reader of that repo sees.
It is rendered from the folder itself (config, weights hash, ``eval_results.json``), so ``clipvip eval`` can add
its results later and re-render the card without the model in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from clipvip.io import atomic_write_json, atomic_write_text

CARD_NAME = "README.md"
EVAL_NAME = "eval_results.json"
PROVENANCE_KEY = "provenance"  # in config.json, next to the "clipvip" model config


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance(source: Any, description: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Where loaded weights came from and what loading did to them. A clipvip folder passes its recorded origin
    on, so a model converted once and re-saved still names the checkpoint it was converted from."""
    from clipvip import __version__

    path = Path(source.path)
    earlier: dict[str, Any] = {}
    if path.is_dir() and (path / "config.json").is_file():
        earlier = json.loads((path / "config.json").read_text()).get(PROVENANCE_KEY) or {}
    step = {"by": f"clipvip {__version__}", "from": description, **{k: v for k, v in changes.items()}}
    return {
        "source": earlier.get("source") or {**source.to_dict(), "describe": source.describe()},
        "loaded_from": source.describe(),
        "conversion": [*earlier.get("conversion", []), step],
    }


def _architecture(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    v, t = cfg["vision"], cfg["text"]
    name = f"ViT (width {v['width']}, {v['layers']} layers, patch {v['patch_size']})"
    if (v["width"], v["layers"]) == (768, 12):
        name = f"ViT-B/{v['patch_size']}"
    return [
        ("vision tower", f"{name}, {v['image_size']} px, {v['heads']} heads, variant `{cfg['variant']}`"),
        ("video proxies / temporal table", f"M = {cfg['num_proxies']}, T0 = {cfg['temporal_size']}"),
        ("frames per video (default)", str(cfg["num_frames"])),
        ("text tower", f"width {t['width']}, {t['layers']} layers, context {t['context_length']} tokens"),
        ("embedding", f"{cfg['embed_dim']}-d, L2-normalised"),
        ("activation", cfg["act"]),
    ]


def render_card(
    config: Mapping[str, Any],
    prov: Mapping[str, Any],
    weights_sha256: str,
    num_params: int | None,
    evals: list[Mapping[str, Any]],
) -> str:
    """Markdown with Hugging Face's YAML metadata header (``library_name``, ``tags``, ``base_model``)."""
    source = prov.get("source") or {}
    meta: dict[str, Any] = {"library_name": "clipvip", "tags": ["clipvip", "clip-vip", "video-text-retrieval"]}
    if source.get("kind") == "hf-hub":
        meta["base_model"] = source["spec"]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]
    lines += [
        "# CLIP-ViP video-text model",
        "",
        "A CLIP-ViP dual encoder (Xue et al., ICLR 2023) saved by clipvip: video and text "
        "go to one embedding space for text-to-video retrieval.",
        "",
        "## Architecture",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in _architecture(config)],
    ]
    if num_params is not None:
        lines.append(f"| parameters | {num_params:,} |")
    lines += ["", "## Source", ""]
    if source:
        lines.append(f"- from: `{source.get('describe') or source.get('spec')}` ({source.get('kind')})")
        if source.get("revision"):
            lines.append(f"- revision: `{source['revision']}`")
    else:
        lines.append("- trained or built with clipvip (no checkpoint was loaded)")
    conversion = prov.get("conversion") or []
    if conversion:
        lines += ["", "## Conversion", ""]
        for step in conversion:
            extra = ", ".join(f"{k}={v}" for k, v in step.items() if k not in ("by", "from") and v is not None)
            lines.append(f"- {step.get('by')}: read {step.get('from')}" + (f"; {extra}" if extra else ""))
    lines += [
        "",
        "## Weights",
        "",
        f"- `model.safetensors` sha256: `{weights_sha256}`",
        "",
        "## Evaluation",
        "",
    ]
    if evals:
        from clipvip.eval.report import markdown_table

        for ev in evals:
            s = ev.get("settings", {})
            title = f"{s.get('preset', 'custom')} ({s.get('annotation', '?')}, {s.get('num_frames', '?')} frames)"
            lines += [markdown_table(ev, title), ""]
    else:
        lines.append("Not evaluated with `clipvip eval` yet.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import clipvip",
        'model = clipvip.load("hf-hub:ORG/NAME")  # or the local folder',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(directory: str | Path, num_params: int | None = None) -> Path:
    """(Re)render ``README.md`` from what the folder holds."""
    d = Path(directory)
    meta = json.loads((d / "config.json").read_text())
    evals_path = d / EVAL_NAME
    evals = json.loads(evals_path.read_text()) if evals_path.is_file() else []
    text = render_card(
        meta["clipvip"], meta.get(PROVENANCE_KEY) or {}, sha256_file(d / "model.safetensors"), num_params, evals
    )
    return atomic_write_text(d / CARD_NAME, text)


def record_eval(model: str | Path, result: Mapping[str, Any]) -> Path | None:
    """Add one ``clipvip eval`` result to a local clipvip folder's ``eval_results.json`` and re-render its card.
    Returns the card, or None when ``model`` is not a local clipvip folder (a hub id, a file)."""
    d = Path(model)
    cfg = d / "config.json"
    if not (d.is_dir() and cfg.is_file() and "clipvip" in json.loads(cfg.read_text())):
        return None
    evals = json.loads((d / EVAL_NAME).read_text()) if (d / EVAL_NAME).is_file() else []
    entry = json.loads(json.dumps(result, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
    key = json.dumps(entry.get("settings", {}), sort_keys=True)
    evals = [e for e in evals if json.dumps(e.get("settings", {}), sort_keys=True) != key] + [entry]
    atomic_write_json(d / EVAL_NAME, evals)
    return write_card(d)
