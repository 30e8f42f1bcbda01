"""Choose the demo's stage lengths on the VALIDATION split (never on test).

Runs ``clipvip_apps.demo.pipeline.run_seed`` with ``eval_split="val"`` for each grid point and writes every seed's
claim metrics (``clipvip_apps.demo.claims.metric_values``) with wall and CPU seconds. A grid point is one of:

- Tables 3-4: ``{"P": steps, "lr": rate[, "F": fine-tune steps]}``: ViP post-pretrained P steps x 64 at lr, then
  fine-tuned F steps (text tower fixed), for none / subtitles only / OCL (d);
- Table 2: ``{"T2": steps[, "T2lr": rate][, "T2B": batch]}``: MeanPool / Full Attention / ViP fine-tuned from the
  CLIP with ``DemoConfig.table2_finetune`` at that length (and rate / batch).

The image-text CLIP is trained once per --root and reused. Several processes may share a --root (one --tag each)
once clip.json exists; --first-seed lets them split the seeds.

    PYTHONPATH=src python benchmarks/demo_validation.py --root /tmp/val --tag A \
        --grid '[{"P": 200, "lr": 0.002}, {"T2": 200}]' --seeds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_info, write_json

from clipvip.synth import generate_world
from clipvip_apps.demo.claims import metric_values
from clipvip_apps.demo.config import DemoConfig, StageConfig
from clipvip_apps.demo.pipeline import build_data, run_seed, train_clip

TABLE2_SEARCHED: tuple[str, ...] = ("meanpool", "fullattn", "vip")


def grid_config(base: DemoConfig, g: dict[str, Any]) -> tuple[DemoConfig, tuple[str, ...]]:
    """The config of one grid point and the ``run_seed`` part it runs ("table2" or "table34")."""
    if "T2" in g:
        t2 = dataclasses.replace(
            base.table2_finetune,
            steps=g["T2"],
            lr=g.get("T2lr", base.table2_finetune.lr),
            batch_size=g.get("T2B", base.table2_finetune.batch_size),
        )
        return dataclasses.replace(base, table2_finetune=t2, table2_variants=TABLE2_SEARCHED), ("table2",)
    ft = dataclasses.replace(base.finetune, steps=g.get("F", base.finetune.steps))
    pt = StageConfig(g["P"], base.pretrain.batch_size, g["lr"], new_param_lr=base.pretrain.new_param_lr)
    return dataclasses.replace(base, pretrain=pt, finetune=ft), ("table34",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="work folder (world, CLIP, runs)")
    ap.add_argument("--tag", required=True, help="name of this grid's result file")
    ap.add_argument("--grid", required=True, help="JSON list of grid points (see the module docstring)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="result JSON (default: ROOT/validation_TAG.json)")
    args = ap.parse_args()
    root = Path(args.root)
    torch.set_num_threads(args.threads)
    base = DemoConfig(
        out=str(root),
        eval_split="val",
        threads=args.threads,
        progress=False,
        table2_variants=("vip",),
        table2_seeds=args.first_seed + args.seeds,
        pretrain_settings=("subtitles (L_VS)", "OCL (d)"),
    )
    world = generate_world(base.world, root / "world", progress=False)
    clip_path = root / "clip.json"
    data = build_data(base, world, with_images=not clip_path.exists())  # the stills feed only the image-text stage
    if clip_path.exists():
        clip = json.loads(clip_path.read_text())
    else:
        clip = train_clip(base, data, root / "runs")
        write_json(clip_path, clip)
    out = Path(args.out or root / f"validation_{args.tag}.json")
    done = json.loads(out.read_text())["runs"] if out.exists() else []
    for g in json.loads(args.grid):
        cfg, parts = grid_config(base, g)
        for s in range(args.first_seed, args.first_seed + args.seeds):
            if any(r["cfg"] == g and r["seed"] == s for r in done):
                continue
            t, c0 = time.perf_counter(), time.process_time()
            r = run_seed(cfg, data, s, root / "runs" / args.tag / f"s{s}", clip["dir"], parts)
            table = r[parts[0]]
            rows = {k: {m: round(x, 2) for m, x in metric_values(v).items()} for k, v in table.items()}
            done.append(
                {
                    "cfg": g,
                    "seed": s,
                    "rows": rows,
                    "wall_s": time.perf_counter() - t,
                    "cpu_s": time.process_time() - c0,
                    "stage_wall_s": {k: round(v, 1) for k, v in r["seconds"].items()},
                }
            )
            print(json.dumps(done[-1]), flush=True)
            write_json(out, {"machine": machine_info(), "base": base.to_dict(), "split": "val", "runs": done})


if __name__ == "__main__":
    main()
