"""Trainer: learning on a toy set, exact resume after a real SIGKILL, NaN stop, best/last, schedules, presets."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import assert_all_close
from torch.utils.data import Dataset

import clipvip
from clipvip.eval import retrieval_metrics
from clipvip_apps.train import (
    NonFiniteLossError,
    ResumableBatchSampler,
    TrainConfig,
    cosine_with_warmup,
    load_config,
    model_config_for,
    param_groups,
    preset_names,
    train,
    uses_weight_decay,
)
from clipvip_apps.train.checkpoint import load_checkpoint

TESTS = Path(__file__).resolve().parent
SOT, EOT = 49406, 49407


class ToyRetrieval(Dataset):
    """Learnable: video k's colour prototype <-> token 100+k. The per-item noise draws from the GLOBAL torch RNG on
    purpose, so exact resume also proves the RNG states are checkpointed."""

    def __init__(self, n: int = 48, classes: int = 12, stage: str = "finetune") -> None:
        g = torch.Generator().manual_seed(0)
        self.protos = torch.randn(classes, 3, 1, 1, generator=g)
        self.n, self.c, self.stage = n, classes, stage

    def __len__(self) -> int:
        return self.n

    def _ids(self, tok: int) -> torch.Tensor:
        ids = torch.zeros(6, dtype=torch.long)
        ids[0], ids[1], ids[2] = SOT, tok, EOT
        return ids

    def __getitem__(self, i: int) -> dict:
        k = i % self.c
        video = self.protos[k].expand(4, 3, 32, 32) + 0.3 * torch.randn(4, 3, 32, 32)
        if self.stage == "finetune":
            return {"video": video, "text": self._ids(100 + k)}
        return {"video": video, "frame": video[2], "subtitle": self._ids(100 + k), "caption": self._ids(300 + k)}


def collate(items: list[dict]) -> dict:
    """Stacks tensors; marks every 10th-index-free sample as fine (the real collate lists undecodable ones)."""
    return {**{k: torch.stack([it[k] for it in items]) for k in items[0]}, "skipped": []}


def toy_eval(model, dataset, batch_size: int = 16) -> dict:
    """Retrieval metrics (clipvip.eval.retrieval_metrics) on one caption per class."""
    items = [dataset[k] for k in range(dataset.c)]
    b = collate(items)
    v = model.encode_video(b["video"])
    t = model.encode_text(b["text"])
    return {"t2v": retrieval_metrics((t @ v.T).numpy())}


def tiny_cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        stage="finetune",
        run_dir=str(tmp_path / "run"),
        arch="tiny",
        batch_size=8,
        max_steps=30,
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=3,
        log_every=1,
        save_every=10,
        device="cpu",
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_loss_falls_on_learnable_toy_set(tmp_path: Path, stage: str) -> None:
    steps = 30 if stage == "finetune" else 20
    cfg = tiny_cfg(tmp_path, stage=stage, max_steps=steps)
    res = train(cfg, train_dataset=ToyRetrieval(stage=stage), collate_fn=collate, progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == steps and res.global_step == steps
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < (0.6 if stage == "finetune" else 0.75) * first, losses
    # run folder: resolved config, metrics.jsonl, last checkpoint, a clipvip.load-able model folder
    run = Path(cfg.run_dir)
    assert load_config(run / "config.yaml").to_dict() == cfg.to_dict()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, steps + 1))
    assert {"loss", "lr", "samples_per_s", "grad_norm"} <= set(lines[0])
    ck = load_checkpoint(res.last_checkpoint)
    assert ck["step"] == steps and ck["config"] == cfg.to_dict()
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batch_in_epoch"} <= set(ck)
    loaded = clipvip.load(res.model_dir)
    for k, v in res.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.cpu())


RESUME_SCRIPT = """
import os, sys, time
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {tests!r})
from test_train import ToyRetrieval, collate, tiny_cfg
from pathlib import Path
from clipvip_apps.train import train

def hang(rec):
    if rec["step"] == {kill_at}:
        print("READY", flush=True)
        time.sleep(600)

cfg = tiny_cfg(Path({tmp!r}), run_dir={run!r}, max_steps={n}, save_every=2)
train(cfg, train_dataset=ToyRetrieval(), collate_fn=collate, callbacks=[hang], progress=False)
"""


@pytest.mark.numerics
def test_resume_after_sigkill_is_bitwise_exact(tmp_path: Path, intra_op_threads: int) -> None:
    """Bitwise: the killed process, the resumed run and the straight run use the same thread count, hence the same
    kernels and reduction order on this CPU; resuming must then change nothing at all."""
    n = 8  # 48 samples / batch 8 = 6 steps per epoch: the resumed part crosses an epoch boundary
    run = str(tmp_path / "killed")
    script = tmp_path / "run_and_hang.py"
    script.write_text(
        RESUME_SCRIPT.format(tests=str(TESTS), kill_at=5, tmp=str(tmp_path), run=run, n=n, threads=intra_op_threads)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        line = ""
        while time.time() < deadline:
            line = proc.stdout.readline()
            if "READY" in line or proc.poll() is not None:
                break
        assert "READY" in line, proc.stderr.read() if proc.poll() is not None else "timed out"
        os.kill(proc.pid, signal.SIGKILL)  # step 5 done, last checkpoint at step 4
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(Path(run) / "checkpoints" / "last.pt")["step"] == 4

    resumed = train(
        tiny_cfg(tmp_path, run_dir=run, max_steps=n, save_every=2),
        train_dataset=ToyRetrieval(),
        collate_fn=collate,
        resume=True,
        progress=False,
    )
    straight = train(
        tiny_cfg(tmp_path, run_dir=str(tmp_path / "straight"), max_steps=n, save_every=2),
        train_dataset=ToyRetrieval(),
        collate_fn=collate,
        progress=False,
    )
    assert resumed.global_step == straight.global_step == n
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max |diff| {(a[k].double() - b[k].double()).abs().max().item():.3g}"
    # the killed run's metrics after its checkpoint (step 5) were dropped and redone once
    steps = [json.loads(x)["step"] for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, n + 1))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    model = clipvip.CLIPViP(clipvip.tiny_config())

    def poison(rec: dict) -> None:
        if rec["step"] == 3:
            with torch.no_grad():
                model.logit_scale.fill_(float("nan"))

    cfg = tiny_cfg(tmp_path, max_steps=8, save_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 4 .*last good checkpoint is .*last\.pt"):
        train(cfg, model=model, train_dataset=ToyRetrieval(), collate_fn=collate, callbacks=[poison], progress=False)
    ck = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_validation_keeps_best_and_last(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, max_steps=8, eval_every=3, save_every=None, best_metric="t2v/R@1")
    res = train(
        cfg,
        train_dataset=ToyRetrieval(),
        eval_dataset=ToyRetrieval(),
        collate_fn=collate,
        evaluate_fn=toy_eval,
        progress=False,
    )
    evals = [h for h in res.history if "eval" in h]
    assert [h["step"] for h in evals] == [3, 6, 8]  # every eval_every steps + the end
    best = max(h["eval"]["t2v/R@1"] for h in evals)
    assert res.best_metric == best
    assert load_checkpoint(res.best_checkpoint)["best_metric"] == best
    assert res.last_checkpoint.exists() and load_checkpoint(res.last_checkpoint)["step"] == 8
    assert clipvip.load(res.best_model_dir).config.variant == "vip"
    with pytest.raises(ValueError, match="best_metric"):
        train(
            tiny_cfg(tmp_path, run_dir=str(tmp_path / "r2"), max_steps=2, best_metric="nope"),
            train_dataset=ToyRetrieval(),
            eval_dataset=ToyRetrieval(),
            collate_fn=collate,
            evaluate_fn=toy_eval,
            progress=False,
        )


def test_bf16_accumulation_checkpointing_frozen_text(tmp_path: Path) -> None:
    model = clipvip.CLIPViP(clipvip.tiny_config())
    text_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    cfg = tiny_cfg(
        tmp_path, max_steps=3, batch_size=4, grad_accum=2, precision="bf16", grad_checkpointing=True, freeze_text=True
    )
    res = train(cfg, model=model, train_dataset=ToyRetrieval(), collate_fn=collate, progress=False)
    assert res.global_step == 3 and all(math.isfinite(h["loss"]) for h in res.history)
    for k, v in model.text.state_dict().items():
        assert torch.equal(v, text_before[k]), k
    ck = load_checkpoint(res.last_checkpoint)
    assert ck["batch_in_epoch"] == 6  # 3 steps x 2 micro-batches
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        train(tiny_cfg(tmp_path, precision="fp16"), train_dataset=ToyRetrieval(), collate_fn=collate)


def test_skipped_samples_are_counted_and_summarised(tmp_path: Path, capsys) -> None:
    def lossy_collate(items: list[dict]) -> dict:
        b = collate(items)
        return {**b, "skipped": [{"path": "/videos/broken.mp4", "reason": "truncated", "video_index": 0}]}

    res = train(tiny_cfg(tmp_path, max_steps=6), train_dataset=ToyRetrieval(), collate_fn=lossy_collate, progress=False)
    assert res.skipped == 6
    out = capsys.readouterr().out
    assert "epoch 0: skipped 6 of 54 samples (6x truncated); e.g. /videos/broken.mp4" in out, out


def test_sampler_global_batches_split_across_ranks_and_resume() -> None:
    one = ResumableBatchSampler(20, 8, seed=1)
    two = [ResumableBatchSampler(20, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(3)
    assert len(one) == 2
    for b, (r0, r1) in zip(one, zip(*two)):
        assert b == r0 + r1
    full = list(one)
    one.set_epoch(3, start_batch=1)
    assert list(one) == full[1:]
    one.set_epoch(4)
    assert list(one) != full
    assert sorted(sum(full, [])) == sorted(set(sum(full, [])))


def test_weight_decay_groups() -> None:
    model = clipvip.CLIPViP(clipvip.tiny_config())
    names = dict(model.named_parameters())
    no_decay = {n for n, p in names.items() if not uses_weight_decay(n, p)}
    for n in [
        "logit_scale",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.added_proxies",
        "visual.temporal_embedding",
        "text.token_embedding.weight",
        "text.positional_embedding",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
        "text.ln_final.bias",
    ]:
        assert n in no_decay, n
    for n in ["visual.conv1.weight", "visual.proj", "text.text_projection"]:
        assert n not in no_decay, n
    assert all(p.ndim >= 2 for n, p in names.items() if n not in no_decay)
    groups = param_groups(model, 0.2)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_new_param_lr_groups_and_first_step(tmp_path: Path) -> None:
    # the parameters a video variant adds to CLIP, listed by hand (independent of NEW_PARAM_NAME_PARTS)
    new_names = {
        "vip": {"visual.added_proxies", "visual.temporal_embedding"},
        "seqtransf": {
            n
            for n, _ in clipvip.CLIPViP(clipvip.tiny_config("seqtransf")).visual.seq_head.named_parameters(
                prefix="visual.seq_head"
            )
        },
        "meanpool": set(),
    }
    for variant, want in new_names.items():
        model = clipvip.CLIPViP(clipvip.tiny_config(variant))
        by_id = {id(p): n for n, p in model.named_parameters()}
        assert [g.get("lr") for g in param_groups(model, 0.1)] == [None, None]  # default: unchanged
        groups = param_groups(model, 0.1, lr=1e-4, new_param_lr=1e-2)
        got_new = {by_id[id(p)] for g in groups if g["lr"] == 1e-2 for p in g["params"]}
        assert got_new == want, variant
        assert sum(len(g["params"]) for g in groups) == len(by_id)
        decayed = {by_id[id(p)] for p in param_groups(model, 0.1)[0]["params"]}  # decay split unchanged
        assert {by_id[id(p)] for g in groups if g["weight_decay"] == 0.1 for p in g["params"]} == decayed
    with pytest.raises(ValueError, match="base lr"):
        param_groups(clipvip.CLIPViP(clipvip.tiny_config("vip")), 0.1, new_param_lr=1e-2)

    # through the trainer: Adam's first step moves each weight by ~lr (m/sqrt(v) = sign(g)), so the step sizes
    # show which rate each parameter got
    torch.manual_seed(0)
    model = clipvip.CLIPViP(clipvip.tiny_config("vip"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = tiny_cfg(
        tmp_path,
        max_steps=1,
        warmup_steps=0,
        lr=1e-5,
        new_param_lr=1e-2,
        clip_grad_norm=None,
        save_every=None,
        eps=1e-12,
    )
    res = train(cfg, model, train_dataset=ToyRetrieval(), collate_fn=collate, progress=False)
    step = {n: (p.detach().cpu() - before[n]).abs().max().item() for n, p in res.model.named_parameters()}
    for n in new_names["vip"]:
        assert step[n] == pytest.approx(1e-2, rel=1e-3), n
    assert max(v for n, v in step.items() if n not in new_names["vip"]) <= 1e-5 * 1.01  # fp32 rounding of w + step


def test_cosine_with_warmup() -> None:
    total, warm = 100, 10
    assert cosine_with_warmup(0, total, warm) == pytest.approx(0.1)
    assert cosine_with_warmup(9, total, warm) == pytest.approx(1.0)
    for s in (10, 35, 55, 99, 100):
        want = 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
        assert cosine_with_warmup(s, total, warm) == pytest.approx(want)
    assert cosine_with_warmup(100, total, warm, min_ratio=0.1) == pytest.approx(0.1)


def test_presets_parse_and_build() -> None:
    names = preset_names()
    for want in [
        "pretrain_vip_b32",
        "pretrain_vip_b16",
        "finetune_msrvtt",
        "finetune_didemo",
        "finetune_lsmdc",
        "finetune_activitynet",
        "tiny",
    ]:
        assert want in names
    cfgs = {n: load_config(n) for n in names}
    paper = {  # Sec. 5.1
        "pretrain_vip_b32": dict(
            stage="pretrain", lr=5e-6, weight_decay=0.05, num_frames=12, context_length=70, ocl_objective="d"
        ),
        "pretrain_vip_b16": dict(stage="pretrain", lr=5e-6, weight_decay=0.05, num_frames=12, arch="B/16"),
        "finetune_msrvtt": dict(stage="finetune", lr=1e-6, weight_decay=0.2, epochs=5, context_length=50),
        "finetune_didemo": dict(epochs=20, lr=1e-6, weight_decay=0.2),
        "finetune_lsmdc": dict(epochs=10, lr=1e-6),
        "finetune_activitynet": dict(epochs=20, num_frames=32),
    }
    for name, fields in paper.items():
        for k, v in fields.items():
            assert getattr(cfgs[name], k) == v, (name, k)
        assert cfgs[name].betas == (0.9, 0.98)
    built = {}
    for cfg in cfgs.values():
        mc = model_config_for(cfg)
        key = (mc.vision.patch_size, mc.vision.width, mc.num_frames)
        if key not in built:  # B/32, B/16, B/32 x 32 frames, tiny
            model = clipvip.CLIPViP(mc)
            built[key] = model.num_params()
            del model
    assert len(built) == 4
    assert 140e6 < built[(32, 768, 12)] < 160e6


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config("tiny", ["lr=3e-4", "betas=[0.8, 0.9]", "train_data.root=/data/x", "max_steps=null"])
    assert cfg.lr == 3e-4 and cfg.betas == (0.8, 0.9) and cfg.train_data == {"root": "/data/x"}
    assert cfg.max_steps is None
    with pytest.raises(ValueError, match="unknown train config keys"):
        load_config("tiny", ["learning_rate=1"])
    with pytest.raises(ValueError, match="ocl_objective"):
        load_config("tiny", ["ocl_objective=z"])
    with pytest.raises(ValueError, match="'ocl_variant' is now called 'ocl_objective'"):
        load_config("tiny", ["ocl_variant=d"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)


class ToyStream(torch.utils.data.IterableDataset):
    """A streaming (WebDataset-like) training set: no length, no seeking."""

    def __init__(self) -> None:
        self.base = ToyRetrieval(n=20)

    def __iter__(self):
        for i in range(len(self.base)):
            yield self.base[i]


@pytest.mark.numerics
def test_stream_resume_is_exact(tmp_path: Path, intra_op_threads: int) -> None:
    class Crash(Exception):
        pass

    def crash(rec: dict) -> None:
        if rec["step"] == 3:
            raise Crash

    def cfg(name: str) -> TrainConfig:
        return tiny_cfg(tmp_path, run_dir=str(tmp_path / name), max_steps=6, save_every=1)

    with pytest.raises(Crash):
        train(cfg("a"), train_dataset=ToyStream(), collate_fn=collate, callbacks=[crash], progress=False)
    resumed = train(cfg("a"), train_dataset=ToyStream(), collate_fn=collate, resume=True, progress=False)
    straight = train(cfg("b"), train_dataset=ToyStream(), collate_fn=collate, progress=False)
    assert [h["epoch"] for h in straight.history] == [0, 0, 1, 1, 2, 2]  # 20 samples: 2 full batches per pass
    for k, v in straight.model.state_dict().items():
        got = resumed.model.state_dict()[k]
        assert torch.equal(got, v), f"{k}: max |diff| {(got.double() - v.double()).abs().max().item():.3g}"
    with pytest.raises(ValueError, match="max_steps"):
        train(tiny_cfg(tmp_path, max_steps=None), train_dataset=ToyStream(), collate_fn=collate)


@pytest.mark.numerics
@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_grad_cache_matches_full_batch(tmp_path: Path, stage: str, intra_op_threads: int) -> None:
    """grad_cache_chunk=3 on batches of 8 (chunks 3+3+2) ends at the weights of the plain full-batch step.

    float32 model, so float32 tolerances: chunked and whole-batch matmuls sum in different orders (~1e-6 relative),
    and 2 AdamW steps amplify that where the second moment is tiny (1e-4). The float64 equality is in
    test_gradcache.py."""

    class Fixed(ToyRetrieval):  # no global-RNG noise: both runs must see identical inputs
        def __getitem__(self, i: int) -> dict:
            torch.manual_seed(i)
            return super().__getitem__(i)

    runs = {}
    for chunk in (None, 3):
        cfg = tiny_cfg(
            tmp_path,
            stage=stage,
            run_dir=str(tmp_path / f"gc{chunk}"),
            max_steps=2,
            save_every=None,
            grad_cache_chunk=chunk,
        )
        runs[chunk] = train(cfg, train_dataset=Fixed(stage=stage), collate_fn=collate, progress=False)
    assert [h["loss"] for h in runs[3].history] == pytest.approx([h["loss"] for h in runs[None].history], rel=1e-5)
    assert_all_close(runs[3].model.state_dict(), runs[None].model.state_dict(), 1e-4, 1e-6, stage)
