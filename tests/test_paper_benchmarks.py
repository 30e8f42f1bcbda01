"""The paper's numbers table (checked against the paper's own text) and the Appendix A zero-shot presets end to end
on a tiny model: msrvtt-mc / lsmdc-mc files in their published layouts, ssv2-mc over all label texts, hmdb51."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import clipvip
from clipvip.eval.paper import PAPER_RESULTS, backbone_of, comparison, comparison_lines, paper_results
from clipvip_apps.cli import main

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "clip-vip-iclr2023.md"


def _table_rows(text: str, caption: str) -> list[list[str]]:
    """Rows (cell texts) of the HTML table printed just before ``caption`` in the paper transcription."""
    end = text.index(caption)
    start = text.rindex("<table", 0, end)
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", text[start:end], flags=re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)]
        rows.append(cells)
    return rows


def test_every_paper_number_is_printed_in_its_table_row(shared_fixtures: Path) -> None:
    """Each entry's numbers appear, in order, in the row its source names (an independent read of the paper)."""
    if not PAPER.is_file():
        pytest.skip("paper transcription not present")
    text = PAPER.read_text(encoding="utf-8")
    captions = {"Table 5": "Table 5: Comparison", "Table 6": "Table 6: Comparison", "Table 7": "Table 7: Evaluation"}
    tables = {k: _table_rows(text, v) for k, v in captions.items()}
    columns = {"msrvtt-1ka": 0, "activitynet": 1, "didemo": 0, "lsmdc": 1}  # left / right block of Tables 5-6
    for r in PAPER_RESULTS:
        table = tables[r.source.split(",")[0]]
        row_name = re.search(r"row '([^']+)'", r.source).group(1)
        if r.row == "accuracy":
            (row,) = [c for c in table if c and c[0] == row_name]
            header = next(c for c in table if "HMDB51" in c)
            col = header.index(r.source.split(", ")[1])
            assert float(row[col]) == r.metrics["accuracy"], r
            continue
        # Tables 5-6 hold a B/32 block and a B/16 block, each with its own 'Ours' / 'Ours*' rows
        block = "CLIP-ViT-B/32" if r.backbone == "B/32" else "CLIP-ViT-B/16"
        first = next(i for i, c in enumerate(table) if c and c[0].startswith(block))
        row = next(c for c in table[first + 1 :] if c and c[0] == row_name)
        vals = [float(v) for v in row[1 + 4 * columns[r.preset] : 5 + 4 * columns[r.preset]]]
        assert vals == list(r.metrics.values()), r
    assert all(not k.lower().startswith("expected") for r in PAPER_RESULTS for k in r.metrics)


def test_comparison_only_for_vit_b_and_labelled_paper() -> None:
    assert backbone_of(clipvip.CLIPViP(clipvip.tiny_config())) is None
    b16 = type("M", (), {"config": clipvip.ModelConfig(vision=clipvip.config.VisionConfig(patch_size=16))})()
    assert backbone_of(b16) == "B/16"
    assert {r.row for r in paper_results("msrvtt-1ka", "B/16")} == {"t2v", "t2v_dsl"}
    assert paper_results("msvd", "B/32") == [] and paper_results("hmdb51", "B/16") == []
    result = {"t2v": {"R@1": 40.0, "R@5": 70.0, "R@10": 80.0, "MdR": 2.0, "MnR": 9.0}}
    (entry,) = comparison(result, "msrvtt-1ka", "B/32")  # no t2v_dsl in this result: only the plain row
    assert entry["paper"]["R@1"] == 50.1 and entry["this_run"]["R@1"] == 40.0
    (line,) = comparison_lines([entry])
    assert line.startswith("paper (Table 5, CLIP-ViT-B/32, row 'Ours'") and "this run: R@1 40.0" in line
    assert "expected" not in line
    from clipvip.eval.report import markdown_table

    table = markdown_table({**result, "paper": [entry]}, "toy")
    assert "- paper (Table 5, CLIP-ViT-B/32, row 'Ours'; CLIP-ViP B/32, fine-tuned on the training split; t2v)" in table
    zs = comparison({"accuracy": 50.0}, "msrvtt-mc", "B/32")
    assert [e["paper"]["accuracy"] for e in zs] == [89.9, 89.4, 86.6, 90.3]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model and 4 small videos named like MSR-VTT ids, plus one corrupt file."""
    from clipvip.video import write_video

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("zs")
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    for i in range(4):
        frames = np.full((8, 32, 32, 3), 50 * i, dtype=np.uint8) + rng.integers(0, 30, (8, 32, 32, 3), dtype=np.uint8)
        write_video(root / "videos" / f"video{i}.mp4", frames, fps=8)
    (root / "videos" / "video9.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    return root / "model", root / "videos"


def _common(model: Path, videos: Path) -> list[str]:
    return ["--model", str(model), "--video-root", str(videos), "--num-workers", "0", "--device", "cpu"]


def test_zeroshot_mc_presets_read_the_published_files(
    toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, videos = toy
    msr = tmp_path / "MSR_MC_test.csv"
    msr.write_text(
        "key\tvid_key\tvideo_name\ta1\ta2\ta3\ta4\ta5\tanswer\n"
        + "".join(f"mc{i}\tmsr{i}\tvideo{i}\ts{i}a\ts{i}b\ts{i}c\ts{i}d\ts{i}e\t{i % 5}\n" for i in (0, 1, 2, 9))
    )
    out = tmp_path / "msr.json"
    assert main(["zeroshot", "mc", "--preset", "msrvtt-mc", "--questions", str(msr), "--json", str(out)]
                + _common(model, videos)) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["n"] == 3 and res["questions"] == 4 and 0 <= res["accuracy"] <= 100
    assert res["skipped_files"] == [str(videos / "video9.mp4")]
    assert res["paper"] == []  # tiny model: no paper number applies
    # LSMDC16 public test layout, videos named by clip id (here: the same toy files)
    lsmdc = tmp_path / "LSMDC16_multiple_choice_test_randomized.csv"
    stamps = "\t".join(["00.00.01.000"] * 4)
    lsmdc.write_text("".join(f"video{i}\t{stamps}\tA\tB\tC\tD\tE\t{i + 1}\n" for i in range(3)))
    (videos.parent / "lsmdc").mkdir(exist_ok=True)
    for i in range(3):  # the official layout is <root>/<clip id>.avi: link the toy mp4 files under that name
        link = videos.parent / "lsmdc" / f"video{i}.avi"
        if not link.exists():
            link.symlink_to(videos / f"video{i}.mp4")
    out = tmp_path / "lsmdc.json"
    rc = main(["zeroshot", "mc", "--preset", "lsmdc-mc", "--questions", str(lsmdc), "--json", str(out)]
              + _common(model, videos.parent / "lsmdc"))  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["n"] == 3 and res["skipped_videos"] == 0
    # the same on a folder written by `clipvip prepare`: <root>/<clip id>.mp4 instead of .avi
    from clipvip.data.prepare import make_job
    from clipvip.jobs import run_job

    job = make_job(videos.parent / "lsmdc", tmp_path / "lsmdc_prepared", None, 32)
    run_job(job, progress=False)
    job.write_manifest("lsmdc")
    out2 = tmp_path / "lsmdc2.json"
    rc = main(["zeroshot", "mc", "--preset", "lsmdc-mc", "--questions", str(lsmdc), "--json", str(out2)]
              + _common(model, tmp_path / "lsmdc_prepared"))  # fmt: skip
    assert rc == 0 and json.loads(out2.read_text())["n"] == 3
    bad = tmp_path / "bad.csv"
    bad.write_text(f"video0\t{stamps}\tA\tB\tC\tD\tE\t9\n")
    assert main(["zeroshot", "mc", "--preset", "lsmdc-mc", "--questions", str(bad)] + _common(model, videos)) == 2
    assert "bad.csv:1: answer index must be 1-5" in capsys.readouterr().err


def test_zeroshot_ssv2_mc_over_all_label_texts(toy: tuple[Path, Path], tmp_path: Path) -> None:
    """ssv2-mc: every video chooses among all label texts; with the identity prompt and no placeholders its
    accuracy equals plain classification over the same texts (checked here against an independent computation)."""
    from clipvip.eval import embed_texts, embed_videos

    model_dir, videos = toy
    labels = tmp_path / "labels.json"
    classes = ["Putting something on something", "Closing something", "Opening something"]
    labels.write_text(json.dumps({c: str(i) for i, c in enumerate(classes)}))
    ann = tmp_path / "validation.json"
    rows = [
        {"id": "video0", "template": "Closing [something]", "placeholders": ["a box"]},
        {"id": "video1", "template": "Putting [something] on [something]", "placeholders": ["a cup", "a table"]},
        {"id": "video2", "template": "Opening [something]", "placeholders": ["a door"]},
    ]
    ann.write_text(json.dumps(rows))
    root = tmp_path / "ssv2"
    root.mkdir()
    for i in range(3):
        (root / f"video{i}.webm").symlink_to(videos / f"video{i}.mp4")
    out = tmp_path / "ssv2.json"
    argv = ["zeroshot", "classify", "--preset", "ssv2-mc", "--labels", str(labels), "--videos", str(ann)]
    assert main(argv + ["--json", str(out)] + _common(model_dir, root)) == 0
    res = json.loads(out.read_text())
    assert res["candidates_per_video"] == 3 and res["filled_placeholders"] is False and "174" in res["note"]
    # independent reference: argmax over the raw label texts
    from clipvip_apps.commands.zeroshot import VideoFiles

    model = clipvip.load(model_dir).eval()
    ds = VideoFiles([str(root / f"video{i}.webm") for i in range(3)], model.config.num_frames, 32)
    v = embed_videos(model, ds, 4, 0, progress=False)
    t = embed_texts(model, classes, progress=False)
    truth = torch.tensor([1, 0, 2])
    assert res["top1"] == pytest.approx(100 * float(((v @ t.T).argmax(1) == truth).float().mean()))
    out2 = tmp_path / "ssv2_filled.json"
    assert main(argv + ["--fill-placeholders", "--json", str(out2)] + _common(model_dir, root)) == 0
    filled = json.loads(out2.read_text())
    assert filled["filled_placeholders"] is True and filled["n"] == 3
    # independent reference for the filled run: each video's own sentences embedded separately, argmax by hand
    # (a tie between the answer and c others earns 1/(c+1), multiple_choice's "mean" rule)
    from clipvip.data.multiple_choice import fill_something

    expected = 0.0
    for i, row in enumerate(rows):
        sents = [fill_something(c, row["placeholders"]) for c in classes]
        scores = (v[i : i + 1].float() @ embed_texts(model, sents, progress=False).float().T)[0]
        if scores[truth[i]] == scores.max():
            expected += 1.0 / int((scores == scores.max()).sum())
    assert filled["accuracy"] == pytest.approx(100 * expected / 3, abs=1e-4)


def test_zeroshot_hmdb51_preset_uses_the_paper_prompt(toy: tuple[Path, Path], tmp_path: Path) -> None:
    model, videos = toy
    (tmp_path / "labels.txt").write_text("brush_hair\nride_bike\nflipping pancake\n")
    (tmp_path / "list.txt").write_text(
        f"{videos}/video0.mp4 brush_hair\n{videos}/video1.mp4 flipping pancake\n{videos}/video9.mp4\tride_bike\n"
    )
    out = tmp_path / "h.json"
    argv = ["zeroshot", "classify", "--preset", "hmdb51", "--labels", str(tmp_path / "labels.txt")]
    assert main(argv + ["--videos", str(tmp_path / "list.txt"), "--json", str(out)] + _common(model, videos)) == 0
    res = json.loads(out.read_text())
    assert res["templates"] == ["a person {}."] and res["n"] == 2
    assert res["skipped_files"] == [str(videos / "video9.mp4")]  # named by file, not by index


def test_zeroshot_ssv2_mc_on_the_real_label_file_and_clip(
    shared_fixtures: Path, toy: tuple[Path, Path], tmp_path: Path
) -> None:
    """The real SSv2 label file (174 texts) and a real SSv2-style WebM clip ('Closing something')."""
    model, _ = toy
    ann = tmp_path / "validation.json"
    ann.write_text(
        json.dumps([{"id": "human2bot_task5_0", "template": "Closing [something]", "placeholders": ["a box"]}])
    )
    out = tmp_path / "ssv2.json"
    argv = ["zeroshot", "classify", "--preset", "ssv2-mc", "--labels"]
    argv += [str(shared_fixtures / "labels" / "something-something-v2-labels.json"), "--videos", str(ann)]
    assert main(argv + ["--json", str(out)] + _common(model, shared_fixtures / "videos")) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 1 and res["candidates_per_video"] == 174 and res["skipped_videos"] == 0
