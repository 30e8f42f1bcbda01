"""The eval / analyze commands end to end on a tiny saved model, and the report writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clipvip
from clipvip.eval.report import markdown_table, plot_recall_curves, write_json
from clipvip_apps.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(d)
    return d


def test_analyze_nmi_cli(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "subtitles.txt"
    b = tmp_path / "captions.txt"
    a.write_text("\n".join(f"so um yeah we're gonna talk about thing number {i} today" for i in range(30)) + "\n\n")
    b.write_text("\n".join(f"a man is cutting vegetable {i} in a kitchen" for i in range(30)))
    rc = main(
        [
            "analyze",
            "nmi",
            str(a),
            str(b),
            "--model",
            str(tiny_model_dir),
            "--n",
            "20",
            "--repeats",
            "2",
            "--json",
            str(tmp_path / "nmi.json"),
            "--plot",
            str(tmp_path / "nmi.png"),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "nmi.json").read_text())
    assert res["repeats"] == 2 and res["n_per_source"] == 20 and len(res["scores"]) == 2
    assert 0.0 <= res["nmi_mean"] <= 1.0
    assert res["nmi_mean"] == pytest.approx(float(np.mean(res["scores"])))
    assert (tmp_path / "nmi.png").read_bytes()[:8] == PNG
    assert "NMI subtitles.txt vs captions.txt" in capsys.readouterr().out


def test_analyze_nmi_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "nmi", str(tmp_path / "nope.txt"), str(tmp_path / "b.txt"), "--model", "x"])
    assert rc == 2 and "nope.txt" in capsys.readouterr().err


def test_reports(tmp_path: Path) -> None:
    m = {"R@1": 40.0, "R@5": 70.0, "R@10": 80.0, "MdR": 2.0, "MnR": 9.5}
    result = {
        "t2v": m,
        "v2t": dict(m, **{"R@1": 42.0}),
        "t2v_dsl": dict(m, **{"R@1": 47.5}),
        "v2t_dsl": m,
        "counts": {"texts": 10, "videos": 10, "skipped_videos": 1, "dropped_texts": 1},
        "ties": "optimistic",
        "ranks": {"t2v": np.array([1.0, 3.0])},
    }
    table = markdown_table(result, "toy")
    assert "| text -> video (DSL) | 47.5 | 70.0 | 80.0 | 2.0 | 9.5 |" in table
    assert "| video -> text | 42.0 |" in table
    assert "Evaluated 10 videos and 10 texts; missing 1 videos (0 without a file, 1 unreadable)" in table
    assert "test queries" in table
    path = write_json(result, tmp_path / "r" / "results.json")
    loaded = json.loads(path.read_text())
    assert "ranks" not in loaded and loaded["t2v_dsl"]["R@1"] == 47.5
    png = plot_recall_curves({"t2v": np.array([1, 2, 5, 60.0])}, tmp_path / "recall.png")
    assert png.read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def msrvtt_toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1k-A style csv over 4 small H.264 videos (32x32, 8 frames), one corrupt file and one missing file."""
    from clipvip.video import write_video

    root = tmp_path_factory.mktemp("msrvtt")
    videos = root / "videos"
    rng = np.random.default_rng(0)
    rows = ["key,vid_key,video_id,sentence"]
    for i in range(4):
        frames = np.full((8, 32, 32, 3), 40 * i, dtype=np.uint8) + rng.integers(0, 30, (8, 32, 32, 3), dtype=np.uint8)
        write_video(videos / f"video{i}.mp4", frames, fps=8)
        rows.append(f"ret{i},msr{i},video{i},a clip number {i} of something")
    (videos / "video9.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    rows.append("ret9,msr9,video9,a broken clip")
    rows.append("ret7,msr7,video7,a clip whose file is missing")
    csv = root / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("\n".join(rows) + "\n")
    return root, videos


def test_eval_cli_preset_cache_and_skipped(
    tiny_model_dir: Path, msrvtt_toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root, videos = msrvtt_toy
    argv = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--preset",
        "msrvtt-1ka",
        "--data-root",
        str(data_root),
        "--video-root",
        str(videos),
        "--num-frames",
        "4",
        "--num-workers",
        "0",
        "--batch-size",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out"),
        "--plot",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "| text -> video (DSL) |" in first and "| video -> text |" in first
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    counts = res["counts"]
    assert {k: counts[k] for k in ("texts", "videos", "skipped_videos", "dropped_texts", "missing_files")} == {
        "texts": 5,
        "videos": 5,
        "skipped_videos": 1,
        "dropped_texts": 1,
        "missing_files": 1,
    }
    # what the numbers cover: 4 of 6 annotated videos evaluated; the missing file and the unreadable one, by name
    assert (counts["evaluated_videos"], counts["evaluated_texts"]) == (4, 4)
    assert (counts["missing_videos"], counts["missing_texts"]) == (2, 2)
    assert counts["skipped_files"] == [str(videos / "video9.mp4")]
    assert "Evaluated 4 videos and 4 texts; missing 2 videos (1 without a file, 1 unreadable)" in first
    assert "MSR-VTT 1k-A test (MSRVTT_JSFUSION_test.csv): 4 videos, 4 texts" in first
    assert res["paper"] == []  # the tiny model is no ViT-B: the paper has no number for it
    assert res["from_cache"] is False and res["settings"]["num_frames"] == 4
    assert set(res) >= {"t2v", "v2t", "t2v_dsl", "v2t_dsl", "rsum"}
    assert (tmp_path / "out" / "recall.png").read_bytes()[:8] == PNG
    assert (tmp_path / "out" / "results.md").read_text().startswith("### MSR-VTT 1k-A test")
    # second run: embeddings from the cache, same numbers
    assert main(argv) == 0
    assert "(embeddings from cache)" in capsys.readouterr().out
    res2 = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res2["from_cache"] is True and res2["t2v"] == res["t2v"] and res2["v2t_dsl"] == res["v2t_dsl"]


def test_eval_cli_missing_annotation(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--preset",
            "lsmdc",
            "--data-root",
            str(tmp_path),
            "--video-root",
            str(tmp_path),
        ]
    )
    assert rc == 2 and "LSMDC16_challenge_1000_publictect.csv" in capsys.readouterr().err


def _direct_scores(model_dir: Path, videos: list[Path], texts: list[str]) -> torch.Tensor:
    """[videos, texts] cosine similarities from the model itself, the reference for the zeroshot command."""
    from clipvip.video import normalize, read_frames

    model = clipvip.load(model_dir).eval()
    n, size = model.config.num_frames, model.config.vision.image_size
    clips = torch.stack([normalize(read_frames(v, num_frames=n, size=size).frames) for v in videos])
    with torch.no_grad():
        return model.encode_video(clips) @ model.encode_text(texts).T


def test_zeroshot_cli_classify_and_mc(
    tiny_model_dir: Path, msrvtt_toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, videos = msrvtt_toy
    (tmp_path / "labels.txt").write_text("brush_hair\nride_bike\nApplyEyeMakeup\n")
    (tmp_path / "list.txt").write_text(
        f"{videos}/video0.mp4 0\n{videos}/video1.mp4 ride_bike\n{videos}/video2.mp4 2\n{videos}/video9.mp4 1\n"
    )
    common = ["--model", str(tiny_model_dir), "--num-workers", "0", "--device", "cpu"]
    rc = main(
        [
            "zeroshot",
            "classify",
            *common,
            "--labels",
            str(tmp_path / "labels.txt"),
            "--videos",
            str(tmp_path / "list.txt"),
            "--json",
            str(tmp_path / "cls.json"),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "cls.json").read_text())
    assert res["n"] == 3 and res["skipped_videos"] == 1 and res["classes"] == 3
    # against the model used directly (read, normalise, encode; no eval code): video i is of class i
    prompts = ["a person brush hair.", "a person ride bike.", "a person apply eye makeup."]
    scores = _direct_scores(tiny_model_dir, [videos / f"video{i}.mp4" for i in range(3)], prompts)
    assert res["top1"] == pytest.approx(100 * (scores.argmax(1) == torch.arange(3)).float().mean().item())
    assert res["templates"] == ["a person {}."]
    # mixed answers: with this tiny model's scores (the reference below) one of three is right, so the check tells a
    # correct scorer from one stuck at 0 or 100
    answers = [4, 1, 2]
    q = [
        {"video": f"video{i}.mp4", "candidates": [f"sentence {k}" for k in range(5)], "answer": a}
        for i, a in enumerate(answers)
    ]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(x) for x in q) + "\n")
    rc = main(
        [
            "zeroshot",
            "mc",
            *common,
            "--questions",
            str(tmp_path / "mc.jsonl"),
            "--video-root",
            str(videos),
            "--json",
            str(tmp_path / "mc.json"),
        ]
    )
    assert rc == 0
    mc = json.loads((tmp_path / "mc.json").read_text())
    scores = _direct_scores(tiny_model_dir, [videos / f"video{i}.mp4" for i in range(3)], q[0]["candidates"])
    assert mc["n"] == 3 and mc["accuracy"] == pytest.approx(
        100 * (scores.argmax(1) == torch.tensor(answers)).float().mean().item()
    )
    (tmp_path / "bad.txt").write_text(f"{videos}/video0.mp4 fly_kite\n")
    rc = main(
        [
            "zeroshot",
            "classify",
            *common,
            "--labels",
            str(tmp_path / "labels.txt"),
            "--videos",
            str(tmp_path / "bad.txt"),
        ]
    )
    assert rc == 2 and "bad.txt:1" in capsys.readouterr().err


def test_presets_match_the_data_formats_and_real_files(shared_fixtures: Path) -> None:
    from clipvip.data import FORMATS, load_annotations
    from clipvip.eval.presets import PRESETS

    assert {p.fmt for p in PRESETS.values()} <= set(FORMATS)
    assert PRESETS["activitynet"].num_frames == 32 and PRESETS["msrvtt-1ka"].num_frames == 12
    ann = shared_fixtures / "annotations"
    msvd = load_annotations(ann / "MSVD_captions_msvd.json", PRESETS["msvd"].fmt, split_list=ann / "MSVD_test_list.txt")
    assert len(msvd) == 670 and sum(len(s.texts) for s in msvd) > 670  # many captions per video: multi-positive v2t
    anet = load_annotations(ann / "ActivityNetCaptions_val_1.json", PRESETS["activitynet"].fmt)
    assert all(len(s.texts) == 1 for s in anet)  # paragraphs: one query per video


def test_text_tower_trims_padding_exactly(tiny_model_dir: Path) -> None:
    """``embed_texts`` batches texts by length and the text tower cuts each batch after its longest text: the
    embeddings equal a reference run here on texts padded to the full 70-token context, in input order, and the
    tower's transformer never sees the extra padding."""
    from clipvip.eval import embed_texts
    from clipvip.model.layers import CausalAttention
    from clipvip.tokenizer import tokenize

    model = clipvip.load(tiny_model_dir).eval()
    texts = [
        "a dog",
        "a man is playing a guitar on a stage in front of a large crowd at night",
        "cat",
        "a red ball rolls to the left next to a small blue square",
        "",
    ]
    tower = model.text
    seen: list[int] = []
    hook = tower.transformer.register_forward_pre_hook(lambda module, args: seen.append(int(args[0].shape[1])))
    try:
        got = embed_texts(model, texts, batch_size=2, context_length=70, progress=False)
    finally:
        hook.remove()
    ids = tokenize(texts, 70)
    with torch.inference_mode():  # the reference: the whole 70-token context through the same weights
        x = tower.token_embedding(ids) + tower.positional_embedding[:70]
        x = tower.ln_final(tower.transformer(x, CausalAttention()))
        reference = F.normalize(x[torch.arange(len(texts)), ids.argmax(dim=-1)] @ tower.text_projection, dim=-1)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
    by_chars = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    lengths = [int(ids[i].argmax()) + 1 for i in by_chars]
    assert seen == [max(lengths[a : a + 2]) for a in range(0, len(texts), 2)]
    assert max(seen) < 70
