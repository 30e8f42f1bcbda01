"""``clipvip demo``: the CLIP-ViP recipe end to end in the synthetic world, with the library's own code.

Stages (each a call into the library / trainer a real run makes):

1. ``clipvip.synth.generate_world`` writes the clips, images and manifests;
2. image-text "CLIP": a ``meanpool`` ``clipvip.CLIPViP`` trained on still images + static captions
   (``clipvip_apps.train.train``, fine-tuning InfoNCE), saved with ``save_pretrained``;
3. paper Table 2: ``clipvip.load(clip, variant=...)`` for MeanPool / SeqTransformer / Full Attention / ViP, each
   fine-tuned on the downstream captions and evaluated (``clipvip.eval``);
4. paper Tables 3-4 and 7: ViP post-pretrained with L_VS on subtitles, L_VS on auxiliary captions and OCL (d) on
   both (``clipvip.losses.ocl_loss`` inside the trainer); each post-pretrained model is evaluated zero-shot
   (retrieval and label-prompt classification of the motion), fine-tuned on the whole downstream training set,
   and, separately, on a 10% subset (the low-data regime);
5. the paper's claims (``DemoConfig.claims``, fixed before running) as paired differences over seeds with 95%
   intervals (``clipvip_apps.demo.claims``), plus the Sec. 3.2 domain-gap NMI with the CLIP's text features;
6. ``clipvip.index.build_index`` over the test clips with the best model; example queries via ``VideoIndex``.

Every seed runs every setting from the same world and the same CLIP (paired by seed: init and data order).
Settings were chosen with ``eval_split="val"`` (the world's validation pairs); the default evaluates on test.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import clipvip
from clipvip.data import collate
from clipvip.io import atomic_write_json
from clipvip.synth import World, generate_world
from clipvip_apps.demo.claims import evaluate_claims
from clipvip_apps.demo.config import (
    PRETRAIN_SETTINGS,
    VARIANT_NAMES,
    DemoConfig,
    StageConfig,
    example_queries,
)
from clipvip_apps.demo.data import (
    CaptionedClips,
    FrameCache,
    GalleryClips,
    MirrorPairs,
    PretrainClips,
)
from clipvip_apps.demo.evaluation import evaluate, position_word_accuracy, run_queries, world_label_prompts
from clipvip_apps.demo.workers import cpu_seconds, run_seeds_in_workers

log = logging.getLogger(__name__)


class _PlainClipIsTheDemosStart(logging.Filter):
    """The demo starts every structure from its own plain image-text CLIP on purpose (Table 2, and Tables 3-4's
    "none" row): the loader's warning about adapting plain CLIP is right for users, and noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("plain CLIP weights")


def _load(start: str | Path, variant: str | None = None) -> Any:
    """``clipvip.load`` without the plain-CLIP adaptation warning (see ``_PlainClipIsTheDemosStart``)."""
    convert_log = logging.getLogger("clipvip.weights.convert")
    quiet = _PlainClipIsTheDemosStart()
    convert_log.addFilter(quiet)
    try:
        return clipvip.load(start, variant=variant)
    finally:
        convert_log.removeFilter(quiet)


POSITION_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))


# ------------------------------------------------------------------------------------------------ training


def _train(
    stage: str,
    model: torch.nn.Module,
    dataset: Any,
    sc: StageConfig,
    run_dir: Path,
    seed: int,
    cfg: DemoConfig,
    ocl_objective: str = "d",
    desc: str = "",
) -> tuple[torch.nn.Module, list[dict], Path]:
    """One trainer call; returns (trained model, loss history, saved model folder). Optimizer checkpoints of the
    finished run are removed (the demo keeps the weights, not the resumable state)."""
    from clipvip_apps.train import TrainConfig, train

    tc = TrainConfig(
        stage=stage,
        run_dir=str(run_dir),
        ocl_objective=ocl_objective,
        batch_size=sc.batch_size,
        max_steps=sc.steps,
        lr=sc.lr,
        new_param_lr=sc.new_param_lr,
        freeze_text=sc.freeze_text,
        weight_decay=sc.weight_decay,
        warmup_ratio=sc.warmup_ratio,
        seed=seed,
        save_every=None,
        log_every=1,
        context_length=cfg.context_length,
        num_workers=0,
        device="cpu",
    )
    # one pass over the repeated set = the whole run, so the trainer writes one checkpoint at the end
    dataset.repeats = max(1, math.ceil(sc.steps * sc.batch_size / dataset.n))
    if cfg.progress and desc:
        tqdm.write(f"  {desc}")
    res = train(tc, model, dataset, None, collate_fn=collate, progress=cfg.progress)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    hist = [{"step": h["step"], "loss": h["loss"]} for h in res.history]
    return res.model, hist, res.model_dir


@dataclass
class _Data:
    world: World
    images: CaptionedClips | None  # the image-text stage's data; None where only the seeds' stages run (workers)
    pretrain: dict[str, PretrainClips]
    train: CaptionedClips
    train_low: CaptionedClips  # the low-data subset of ``train`` (same clips for every setting and seed)
    gallery: GalleryClips  # the evaluation split (``DemoConfig.eval_split``)
    eval_rows: list[dict[str, Any]]
    failed: dict[str, str]


def low_data_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded ``fraction`` (at least 2) of ``n`` training clips."""
    k = min(n, max(2, round(fraction * n)))
    return sorted(np.random.default_rng((seed, 10)).permutation(n)[:k].tolist())


def build_data(cfg: DemoConfig, world: World, with_images: bool = True) -> _Data:
    """Decode what the stages need, once: the still images (only with ``with_images``: the image-text stage), the
    post-pretraining clips (only when ``cfg.pretrain_settings`` is not empty), the training and evaluation clips.
    A worker that runs one seed's part decodes only that part's data."""
    w = cfg.world
    cache = FrameCache(w.num_frames, w.frame_size)
    eval_rows = world.test if cfg.eval_split == "test" else world.val
    if not eval_rows:
        raise ValueError(f"the world has no {cfg.eval_split} split (num_{cfg.eval_split}_pairs = 0)")
    img_paths = [world.image_path(r["clip_id"]) for r in world.images] if with_images else []
    pre_paths = [world.video_path(r["clip_id"]) for r in world.pretrain] if cfg.pretrain_settings else []
    train_paths = [world.video_path(r["clip_id"]) for r in world.train]
    eval_paths = [world.video_path(r["clip_id"]) for r in eval_rows]
    cache.load(img_paths, "images", progress=cfg.progress)
    cache.load(pre_paths, "pretrain clips", middle=True, progress=cfg.progress)
    cache.load(train_paths + eval_paths, f"train/{cfg.eval_split} clips", progress=cfg.progress)
    pretrain = {
        name: PretrainClips(cache, pre_paths, world.pretrain, text_source=PRETRAIN_SETTINGS[name][1])
        for name in cfg.pretrain_settings
    }
    train_texts = [r["text"] for r in world.train]
    low = low_data_subset(len(train_paths), cfg.low_data_fraction, w.seed)
    return _Data(
        world=world,
        images=CaptionedClips(cache, img_paths, [[r["text"]] for r in world.images]) if with_images else None,
        pretrain=pretrain,
        train=CaptionedClips(cache, train_paths, train_texts),
        train_low=CaptionedClips(cache, [train_paths[i] for i in low], [train_texts[i] for i in low]),
        gallery=GalleryClips(cache, eval_paths, [r["text"] for r in eval_rows]),
        eval_rows=eval_rows,
        failed=dict(cache.failed),
    )


def train_clip(cfg: DemoConfig, data: _Data, root: Path) -> dict[str, Any]:
    """The image-text "CLIP" stage, trained once (seed 0) and shared by every seed, like a released CLIP."""
    t = time.perf_counter()
    if data.images is None:
        raise ValueError("train_clip needs the still images: build_data(..., with_images=True)")
    torch.manual_seed(0)
    data.images.seed = 0
    clip = clipvip.CLIPViP(cfg.model_config("meanpool"))
    images: Any = data.images
    if cfg.clip_mirror_fraction > 0:
        if cfg.clip_stage.batch_size % 2:
            raise ValueError(
                f"clip_mirror_fraction needs an even clip_stage batch size, got {cfg.clip_stage.batch_size}"
            )
        images = MirrorPairs(data.images, cfg.clip_mirror_fraction)
    clip, hist, clip_dir = _train(
        "finetune", clip, images, cfg.clip_stage, root / "clip", 0, cfg, desc="image-text CLIP stage"
    )
    seconds = time.perf_counter() - t
    probes = {f"{a}_{b}": position_word_accuracy(clip, data.images, (a, b)) for a, b in POSITION_PAIRS}
    return {"dir": str(clip_dir), "curve": hist, "seconds": seconds, "position_words": probes}


def run_seed(
    cfg: DemoConfig,
    data: _Data,
    seed: int,
    root: Path,
    clip_dir: str | Path,
    parts: tuple[str, ...] = ("table2", "table34"),
) -> dict[str, Any]:
    """Fine-tuning / post-pretraining + evaluation for one seed, from the shared CLIP.

    Returns {"table2", "table34", "curves", "models", "seconds"}; Table 2 (its own, longer fine-tuning: it tests
    whether frame order is learnt at all) only for ``seed < cfg.table2_seeds``. Each Tables 3-4 row holds the
    full fine-tuning's evaluation, with ``zero_shot`` (the model before fine-tuning, label classification
    included) and ``low_data`` (the same starting model fine-tuned on the low-data subset)."""
    rows = data.eval_rows
    prompts = world_label_prompts(cfg.world)
    out: dict[str, Any] = {"seed": seed, "table2": {}, "table34": {}, "curves": {}, "models": {}, "seconds": {}}
    for ds in (data.train, data.train_low, *data.pretrain.values()):
        ds.seed = seed

    def finetune(
        start: str | Path, variant: str | None, tag: str, desc: str, sc: StageConfig = cfg.finetune
    ) -> tuple[dict[str, Any], Path]:
        torch.manual_seed(seed)
        model = _load(start, variant)
        zs = evaluate(model, data.gallery, rows, prompts if variant in (None, "vip") else None)
        model, hist, mdir = _train("finetune", model, data.train, sc, root / tag, seed, cfg, desc=desc)
        res = evaluate(model, data.gallery, rows)
        res["zero_shot"] = zs
        out["curves"][desc.split("] ", 1)[-1]] = hist
        return res, mdir

    def finetune_low(start: str | Path, variant: str | None, tag: str, desc: str) -> dict[str, Any]:
        torch.manual_seed(seed)
        model = _load(start, variant)
        model, hist, _ = _train("finetune", model, data.train_low, cfg.finetune_low, root / tag, seed, cfg, desc=desc)
        out["curves"][desc.split("] ", 1)[-1]] = hist
        return evaluate(model, data.gallery, rows)

    if "table2" in parts and seed < cfg.table2_seeds:
        for variant in cfg.table2_variants:
            t = time.perf_counter()
            name = VARIANT_NAMES[variant]
            res, mdir = finetune(
                clip_dir, variant, f"t2_{variant}", f"[seed {seed}] Table 2: fine-tune {name}", cfg.table2_finetune
            )
            out["table2"][name] = res
            out["models"][f"table2 {name}"] = str(mdir)
            out["seconds"][f"t2_{variant}"] = time.perf_counter() - t

    if "table34" not in parts:
        return out
    t = time.perf_counter()  # Tables 3-4's first row: ViP fine-tuned straight from the CLIP
    res, mdir = finetune(clip_dir, "vip", "ft_vip", f"[seed {seed}] fine-tune ViP from CLIP")
    res["low_data"] = finetune_low(clip_dir, "vip", "ftlow_vip", f"[seed {seed}] 10% fine-tune ViP from CLIP")
    out["table34"]["none (CLIP-ViP)"] = res
    out["models"]["none (CLIP-ViP)"] = str(mdir)
    out["seconds"]["ft_vip"] = time.perf_counter() - t

    for name in cfg.pretrain_settings:
        t = time.perf_counter()
        ocl, _ = PRETRAIN_SETTINGS[name]
        slug = name.split()[0].lower()
        torch.manual_seed(seed)
        model = _load(clip_dir, "vip")
        _, hist_pt, pt_dir = _train(
            "pretrain",
            model,
            data.pretrain[name],
            cfg.pretrain,
            root / f"pt_{slug}",
            seed,
            cfg,
            ocl_objective=ocl,
            desc=f"[seed {seed}] post-pretrain ViP: {name}",
        )
        out["curves"][f"post-pretrain {name}"] = hist_pt
        res, mdir = finetune(pt_dir, None, f"ptft_{slug}", f"[seed {seed}] fine-tune after {name}")
        res["low_data"] = finetune_low(pt_dir, None, f"ptftlow_{slug}", f"[seed {seed}] 10% fine-tune after {name}")
        out["table34"][name] = res
        out["models"][name] = str(mdir)
        out["seconds"][f"pt_{slug}"] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------------------------------------ main


def domain_gap(cfg: DemoConfig, world: World, clip_dir: str | Path) -> dict[str, Any]:
    """Paper Sec. 3.2 inside the world: NMI of K-means(2) clusters vs source, for subtitles vs downstream (train)
    captions and auxiliary captions vs downstream captions, with the image-text CLIP's text features."""
    from clipvip.eval.nmi import domain_gap_nmi, model_feature_fn

    model = _load(clip_dir)
    features = model_feature_fn(model, context_length=cfg.context_length, progress=False)
    downstream = [t for r in world.train for t in r["text"]]
    sources = {
        "subtitles vs downstream captions": [r["subtitle"] for r in world.pretrain],
        "auxiliary captions vs downstream captions": [r["caption"] for r in world.pretrain],
    }
    return {
        name: domain_gap_nmi(texts, downstream, features, cfg.nmi_per_source, cfg.nmi_repeats).to_dict()
        for name, texts in sources.items()
    }


# DemoConfig fields the image-text CLIP stage depends on (a resumed run reuses the stage when they are unchanged)
CLIP_KEYS: tuple[str, ...] = (
    "world",
    "width",
    "vision_layers",
    "text_layers",
    "context_length",
    "clip_stage",
    "clip_mirror_fraction",
    "threads",
)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage; write results.json, report.md and the PNGs under ``cfg.out``. Returns the results."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, t0, out)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig, t0: float, out: Path) -> dict[str, Any]:
    from clipvip_apps.demo.report import summarise, write_report

    timings: dict[str, float] = {}
    cpu0, load0 = cpu_seconds(), os.getloadavg()

    t = time.perf_counter()
    world = generate_world(cfg.world, out / "world", progress=cfg.progress)
    timings["world"] = time.perf_counter() - t
    t = time.perf_counter()
    data = build_data(cfg, world)
    timings["decode"] = time.perf_counter() - t
    if data.failed:
        log.warning("%d files failed to decode and were skipped: %s", len(data.failed), list(data.failed)[:3])

    # Resume: a previous run left its finished stages in results.partial.json. Its seeds are reused when the whole
    # config is the same; its image-text CLIP when the config of the world, the model and that stage is.
    partial_path = out / "results.partial.json"
    partial = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    now = json.loads(json.dumps(cfg.to_dict(), default=str))
    old = partial.get("config", {})
    clip = partial.get("clip")
    if clip is None or any(old.get(k) != now[k] for k in CLIP_KEYS) or not Path(clip["dir"]).is_dir():
        clip = None
    if old != now:
        partial = {}
    if cfg.progress and (clip or partial):
        tqdm.write(f"resuming from {partial_path}: CLIP stage reused, {len(partial.get('seeds', []))} seed(s) done")
    clip = clip or train_clip(cfg, data, out / "runs")
    timings["clip_stage"] = clip["seconds"]
    seeds = list(partial.get("seeds", []))[: cfg.seeds]
    atomic_write_json(partial_path, {"config": cfg.to_dict(), "clip": clip, "seeds": seeds}, default=str)
    todo = list(range(len(seeds), cfg.seeds))
    if cfg.workers > 1 and len(todo) > 1:
        seeds += run_seeds_in_workers(cfg, todo, out, clip, partial_path, seeds)
    else:
        for s in todo:
            seeds.append(run_seed(cfg, data, s, out / "runs" / f"seed{s}", clip["dir"]))
            # keep finished work: partial results are on disk after every seed
            atomic_write_json(partial_path, {"config": cfg.to_dict(), "clip": clip, "seeds": seeds}, default=str)
    timings["fine-tune/post-pretrain"] = sum(sum(s["seconds"].values()) for s in seeds)

    t = time.perf_counter()
    nmi = domain_gap(cfg, world, clip["dir"])
    timings["nmi"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = summarise(seeds)
    claims = evaluate_claims(seeds, cfg.claims, cfg.confidence)
    best = "OCL (d)" if "OCL (d)" in cfg.pretrain_settings else "none (CLIP-ViP)"
    queries = cfg.queries if cfg.queries is not None else example_queries(world.test)
    search = run_queries(seeds[0]["models"][best], world, out, queries, cfg.top_k, cfg.progress)
    search["model"] = f"{best}, seed 0"
    timings["search"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    timings["cpu_total"] = cpu_seconds() - cpu0
    results = {
        "config": cfg.to_dict(),
        "model": {"params": clipvip.CLIPViP(cfg.model_config("vip")).num_params()},
        "world": {
            "root": str(world.root),
            "images": len(world.images),
            "pretrain": len(world.pretrain),
            "train": len(world.train),
            "test": len(world.test),
            "val": len(world.val),
            "eval_split": cfg.eval_split,
            "train_low_data": data.train_low.n,
            "failed_files": data.failed,
            "captioner": world.pretrain[0]["captioner"] if world.pretrain else None,
        },
        "clip_stage": clip,
        "seeds": seeds,
        "summary": summary,
        "claims": claims,
        "domain_gap_nmi": nmi,
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "search": search,
        "timings_s": timings,
    }
    write_report(results, out, data)
    atomic_write_json(out / "results.json", results, default=str)
    (out / "results.partial.json").unlink(missing_ok=True)
    return results
