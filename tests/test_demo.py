"""``clipvip demo --quick`` end to end (the CI smoke run of the whole recipe), plus the demo's evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from clipvip_apps.cli import main
from clipvip_apps.demo.claims import DEFAULT_CLAIMS


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    # two worker processes of one thread each: the path a busy machine takes (seeds split into Table 2 and
    # Tables 3-4 parts, merged back in seed order)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1", "--workers", "2"]) == 0
    return out


def _is_png(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


@pytest.mark.slow
def test_quick_demo_writes_every_output(quick_demo: Path) -> None:
    out = quick_demo
    pngs = ("training_curves.png", "recall_bars.png", "query_grid.png", "claims.png")
    for name in ("report.md", "results.json", *pngs):
        assert (out / name).is_file(), name
    for name in pngs:
        assert _is_png(out / name), name
    assert not (out / "results.partial.json").exists()

    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]["table2"]) == {"MeanPool", "Full Attention", "ViP (M=4)"}
    t34 = res["summary"]["table34"]
    assert set(t34) == {"none (CLIP-ViP)", "subtitles (L_VS)", "captions (L_VC)", "OCL (d)"}
    for table in ("table2", "table34"):
        for row in res["summary"][table].values():
            parts = [row, row["zero_shot"]] + ([row["low_data"]] if table == "table34" else [])
            for part in parts:
                for col in ("R@1", "R@5", "R@10", "dirR@1", "twin"):
                    v = part[col]["mean"]
                    assert 0.0 <= v <= 100.0 and math.isfinite(v)
                assert part["R@1"]["mean"] <= part["R@5"]["mean"] <= part["R@10"]["mean"]
    for row in t34.values():  # Table 7 analogue: zero-shot label classification for every setting
        assert 0.0 <= row["zero_shot"]["label"]["mean"] <= 100.0 and len(row["zero_shot"]["label"]["values"]) == 2
    assert res["world"]["train_low_data"] == 20 and res["world"]["eval_split"] == "test"
    # the claims of the config, each with a paired interval over the 2 seeds
    claims = res["claims"]
    assert [c["name"] for c in claims] == [c.name for c in DEFAULT_CLAIMS]
    for c in claims:
        assert c["n"] == 2 and c["interval"][0] <= c["mean_difference"] <= c["interval"][1]
        assert c["holds"] == (c["interval"][0] > 0)
    for k, v in res["domain_gap_nmi"].items():
        assert 0.0 <= v["nmi_mean"] <= 1.0 and v["repeats"] == 2, k
    assert [s["seed"] for s in res["seeds"]] == [0, 1] and all(s["table2"] and s["table34"] for s in res["seeds"])
    seed = res["seeds"][0]
    # every stage really trained: a loss curve per run, and the contrastive loss went down (not asserted for the
    # 10% fine-tunes: on 20 clips in batches of 16 the loss starts low, and a smoke-size run may not lower it)
    for name, curve in seed["curves"].items():
        assert len(curve) >= 10, name
        if name.startswith("10%"):
            continue
        k = max(1, len(curve) // 5)
        first = sum(r["loss"] for r in curve[:k]) / k
        last = sum(r["loss"] for r in curve[-k:]) / k
        assert last < first, f"{name}: loss {first:.3f} -> {last:.3f}"
    # the image-text CLIP learned something: zero-shot text->video retrieval above chance (1/72 = 1.4%)
    zs = res["summary"]["table2"]["MeanPool"]["zero_shot"]["R@5"]["mean"]
    assert zs > 3 * 500 / res["world"]["test"]
    # an order-blind model cannot separate time-reversed twins: MeanPool sits at chance. (ViP > MeanPool on
    # motion direction needs the full demo's longer fine-tuning; quick mode does not show it, so it is not
    # asserted here: see report.md of a full run.)
    assert abs(res["summary"]["table2"]["MeanPool"]["twin"]["mean"] - 50.0) < 5.0
    # the example queries were answered from the index over the test clips
    q = res["search"]["queries"]
    assert len(q) == 5 and all(1 <= len(hits) <= 5 for hits in q.values())
    assert all(h["caption"] != "?" for hits in q.values() for h in hits)
    report = (out / "report.md").read_text()
    assert "Table 2" in report and "Tables 3-4" in report and "| MeanPool |" in report and "Table 7" in report
    assert "| OCL (d) > none, fine-tuned |" in report and "![claims](claims.png)" in report
    assert "synthetic-frame-captioner" in report


def _small_demo(tmp_path: Path, **world_sizes: int):
    """A quick-preset demo config over a tiny generated world, and its data sets."""
    from clipvip.synth import WorldConfig, generate_world
    from clipvip_apps.demo import DemoConfig
    from clipvip_apps.demo.pipeline import build_data

    cfg = DemoConfig.preset(True, out=str(tmp_path), progress=False, world=WorldConfig(num_test_pairs=9, **world_sizes))
    world = generate_world(cfg.world, tmp_path / "world", progress=False)
    return cfg, world, build_data(cfg, world)


def test_evaluate_twin_accuracy_against_direct_formula(tmp_path: Path) -> None:
    """``evaluate``'s twin accuracy and direction subset, against a loop written here over the raw embeddings."""
    import numpy as np

    from clipvip_apps.demo import evaluate

    cfg, world, data = _small_demo(tmp_path, num_images=4, num_pretrain=4, num_train=4)
    torch.manual_seed(0)
    from clipvip import CLIPViP

    for variant in ("meanpool", "vip"):
        model = CLIPViP(cfg.model_config(variant)).eval()
        with torch.no_grad():
            vids = torch.stack([data.gallery[i]["video"] for i in range(len(data.gallery))])
            v = model.encode_video(vids)
            t = model.encode_text(data.gallery.texts)
        sim = (t @ v.T).numpy()
        idx = {r["clip_id"]: i for i, r in enumerate(world.test)}
        expect = []
        for k, r in enumerate(world.test):
            d = sim[k, k] - sim[k, idx[r["twin"]]]
            expect.append(1.0 if d > 1e-6 else 0.5 if abs(d) <= 1e-6 else 0.0)
        res = evaluate(model, data.gallery, world.test)
        assert res["twin_accuracy"] == pytest.approx(100 * np.mean(expect))
        direction = [r["motion"] in ("left", "right", "up", "down") for r in world.test]
        assert res["twin_accuracy_direction"] == pytest.approx(100 * np.mean(np.asarray(expect)[direction]))
        if variant == "meanpool":  # order-blind: identical twins -> every pair is a tie (exactly 50)
            assert res["twin_accuracy"] == pytest.approx(50.0)


@pytest.mark.parametrize("pair", [("left", "right"), ("top", "bottom")])
def test_position_word_probe_against_direct_loop(tmp_path: Path, pair: tuple[str, str]) -> None:
    """``position_word_accuracy`` against a loop written here (captions swapped by hand, one image at a time)."""
    from clipvip import CLIPViP
    from clipvip_apps.demo.evaluation import position_word_accuracy

    cfg, world, data = _small_demo(tmp_path, num_images=40, num_pretrain=2, num_train=2)
    torch.manual_seed(1)
    model = CLIPViP(cfg.model_config("meanpool")).eval()
    wins = []
    for j, texts in enumerate(data.images.texts):
        words = texts[0].split()
        if (pair[0] in words) == (pair[1] in words):
            continue
        other = texts[0].replace(pair[0], "#").replace(pair[1], pair[0]).replace("#", pair[1])
        with torch.no_grad():
            v = model.encode_video(data.images[j]["video"][None])[0]
            t = model.encode_text([texts[0], other])
        wins.append(float(t[0] @ v > t[1] @ v))
    assert len(wins) >= 5
    res = position_word_accuracy(model, data.images, pair)
    assert res["n"] == len(wins)
    assert res["accuracy"] == pytest.approx(100 * sum(wins) / len(wins))


def test_mirror_pairs_are_adjacent_mirrored_and_batch_aligned(tmp_path: Path) -> None:
    """``MirrorPairs``: each mirrored item directly follows its original at an even position (so an even batch
    never splits a pair), its pixels are the original's flipped by numpy, and its caption is the one the scene
    describer writes for the scene with x mirrored (an independent reference for the left/right swap)."""
    import dataclasses

    import numpy as np

    from clipvip.synth import WorldConfig, generate_world
    from clipvip.synth.text import static_description
    from clipvip_apps.demo import DemoConfig
    from clipvip_apps.demo.data import MirrorPairs
    from clipvip_apps.demo.pipeline import build_data

    cfg = DemoConfig.preset(
        True,
        out=str(tmp_path),
        progress=False,
        world=WorldConfig(num_images=40, num_pretrain=2, num_train=2, num_test_pairs=9),
    )
    world = generate_world(cfg.world, tmp_path / "world", progress=False)
    data = build_data(cfg, world)
    ds = MirrorPairs(data.images, fraction=1.0, seed=3)
    ds.set_epoch(2)
    items = list(ds)
    by_text = {t[0]: j for j, t in enumerate(data.images.texts)}
    mirrorable = sum(any(w in ("left", "right") for w in t[0].split()) for t in data.images.texts)
    assert mirrorable >= 10
    assert len(items) == 2 * mirrorable + 2 * ((len(data.images.texts) - mirrorable) // 2)
    pairs = 0
    for k in range(0, len(items), 2):
        a, b = items[k], items[k + 1]
        if not torch.equal(b["video"], a["video"].flip(-1)):  # two plain images, each with its own caption
            assert data.images.texts[by_text[a["text"]]] == [a["text"]] and b["text"] in by_text
            continue
        pairs += 1
        j = by_text[a["text"]]
        assert torch.equal(a["video"], data.images[j]["video"])
        flipped = np.ascontiguousarray(a["video"].numpy()[..., ::-1])
        assert np.array_equal(b["video"].numpy(), flipped)
        spec = world.specs[world.images[j]["clip_id"]]
        mirrored = [
            (dataclasses.replace(o, start=(1 - o.start[0], o.start[1]), end=(1 - o.end[0], o.end[1])), 0.0)
            for o in spec.objects
        ]
        assert b["text"] == static_description(mirrored)
    assert pairs == mirrorable
    ds.set_epoch(3)
    assert [it["text"] for it in ds] != [it["text"] for it in items]  # reshuffled per epoch


def test_example_queries_are_test_captions_with_a_twin_pair() -> None:
    from clipvip.synth import WorldConfig, plan_world
    from clipvip_apps.demo.config import EXAMPLE_MOTIONS, example_queries

    world = plan_world(WorldConfig(num_images=2, num_pretrain=2, num_train=2, num_test_pairs=18))
    queries = example_queries(world.test)
    by_text = {r["text"]: r for r in world.test}
    assert len(queries) == len(EXAMPLE_MOTIONS) + 1 and all(q in by_text for q in queries)
    assert [by_text[q]["motion"] for q in queries] == ["left", "right", *EXAMPLE_MOTIONS[1:]]
    assert by_text[queries[0]]["twin"] == by_text[queries[1]]["clip_id"]
