"""Why the demo's zero-shot motion classification (Table 7's label prompts) sits at or below chance: measured on
the VALIDATION split with the image-text CLIP of a ``demo_validation.py`` root.

For the CLIP loaded as ViP (the "none" row's zero-shot model) and as MeanPool, over all frames and over the
first / last frame alone, it writes the accuracy, the predicted-label histogram, the share of time-reversed twin
pairs that get the same label (an order-blind model gives both twins one label, so at most one of a left/right,
up/down, grows/shrinks or appears/disappears pair can be right) and each true motion's top predictions.

    PYTHONPATH=src python benchmarks/demo_zeroshot_labels.py --root /tmp/val \
        --out benchmarks/results/demo_zeroshot_labels.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_info, write_json

import clipvip
from clipvip.synth import plan_world
from clipvip_apps.demo.config import DemoConfig
from clipvip_apps.demo.evaluation import label_predictions, world_label_prompts
from clipvip_apps.demo.pipeline import build_data


def diagnose(model: torch.nn.Module, video: torch.Tensor, rows: list[dict[str, Any]], prompts: dict) -> dict:
    """Prompt-ensembled zero-shot predictions of ``video`` ([N, T, C, H, W]) and what they say."""
    model.eval()
    with torch.no_grad():
        v = torch.cat([model.encode_video(video[k : k + 32]) for k in range(0, len(video), 32)])
        v = v / v.norm(dim=-1, keepdim=True)
    pred = label_predictions(model, v, prompts)  # the demo's own classifier (its zsLabel metric)
    labels = list(prompts)
    truth = [r["motion"] for r in rows]
    index = {r["clip_id"]: i for i, r in enumerate(rows)}
    same = [pred[i] == pred[index[r["twin"]]] for i, r in enumerate(rows)]
    return {
        "accuracy": 100.0 * float(np.mean([p == t for p, t in zip(pred, truth, strict=True)])),
        "chance": 100.0 / len(labels),
        "predicted": dict(Counter(pred).most_common()),
        "twins_same_label": 100.0 * float(np.mean(same)),
        "by_true_motion": {
            m: dict(Counter(p for p, t in zip(pred, truth, strict=True) if t == m).most_common(3)) for m in labels
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="a demo_validation.py root (world/ and clip.json)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = DemoConfig(eval_split="val", progress=False, pretrain_settings=())
    world = plan_world(cfg.world, Path(args.root) / "world")
    data = build_data(cfg, world, with_images=False)  # the CLIP stage is read from clip.json
    clip = json.loads((Path(args.root) / "clip.json").read_text())["dir"]
    prompts = world_label_prompts(cfg.world)
    video = torch.stack([data.gallery[i]["video"] for i in range(len(data.eval_rows))])
    first = video[:, :1].expand_as(video).contiguous()
    last = video[:, -1:].expand_as(video).contiguous()
    vip, meanpool = clipvip.load(clip, variant="vip"), clipvip.load(clip, variant="meanpool")
    result = {
        "machine": machine_info(),
        "split": "val",
        "truth": dict(Counter(r["motion"] for r in data.eval_rows)),
        "runs": {
            "CLIP as ViP, all frames (the 'none' row's zero-shot)": diagnose(vip, video, data.eval_rows, prompts),
            "CLIP as MeanPool, all frames": diagnose(meanpool, video, data.eval_rows, prompts),
            "CLIP, first frame only": diagnose(meanpool, first, data.eval_rows, prompts),
            "CLIP, last frame only": diagnose(meanpool, last, data.eval_rows, prompts),
        },
    }
    write_json(Path(args.out), result)
    for name, r in result["runs"].items():
        print(f"{name}: {r['accuracy']:.1f}% (twins same label {r['twins_same_label']:.0f}%), {r['predicted']}")


if __name__ == "__main__":
    main()
