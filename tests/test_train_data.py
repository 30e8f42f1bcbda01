"""``clipvip train`` on your own videos without reading the source: a jsonl of ``{video, caption}`` rows works as
is, frame count/size come from the model, and ``--help`` lists every ``train_data`` key with its default."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from clipvip import data
from clipvip_apps.cli import build_parser, main


def _help(command: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command].format_help()


def test_help_lists_every_data_key_with_its_default():
    text = _help("train")
    for cls in (data.RetrievalDataset, data.PretrainDataset):
        for name in inspect.signature(cls.__init__).parameters:
            if name != "self":
                line = next((ln for ln in text.splitlines() if ln.strip().startswith(name + " ")), None)
                assert line is not None and "(default: " in line, name


def test_readme_lists_the_same_keys():
    from clipvip_apps.train.data_args import schema_text

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert schema_text() in readme, (
        "README's train_data list is stale: paste clipvip_apps.train.data_args.schema_text()"
    )


def test_every_option_help_shows_its_default():
    for command in ("index", "encode-video", "convert", "train", "eval"):
        text = _help(command)
        assert "(default: " in text
    assert "(default: 8)" in _help("encode-video")  # --batch-size had no help text at all
    assert "squash" in _help("encode-video")


@pytest.fixture
def own_videos(tmp_path: Path) -> Path:
    from clipvip.video import write_video

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):  # 40x48 px: neither the tiny model's 32 nor 224; frames are resized to the model's size
        write_video(tmp_path / "clips" / f"c{i}.mp4", rng.integers(0, 256, (6, 40, 48, 3), dtype=np.uint8), fps=6)
        rows.append({"video": f"clips/c{i}.mp4", "caption": f"clip number {i}"})
    rows.append({"video": str(tmp_path / "clips" / "c0.mp4"), "caption": "an absolute path works too"})
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_jsonl_with_video_and_caption_trains_as_is(own_videos: Path, capsys):
    ds_samples = data.load_annotations(own_videos / "mine.jsonl", "jsonl")
    assert len(ds_samples) == 5 and ds_samples[0].file == "clips/c0.mp4"
    run = own_videos / "run"
    args = ["train", "--config", "tiny", "--set", f"run_dir={run}", "--set", "max_steps=2", "--set", "batch_size=4"]
    args += ["--set", f"train_data={{samples: {own_videos / 'mine.jsonl'}, video_root: {own_videos}}}"]
    assert main(args) == 0, capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").is_file()


def test_unknown_data_key_is_one_line(own_videos: Path, capsys):
    args = ["train", "--config", "tiny", "--set", f"run_dir={own_videos / 'r'}"]
    args += ["--set", f"train_data={{samples: {own_videos / 'mine.jsonl'}, frames: 8}}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown keys ['frames']" in err and "num_frames" in err and "\n" not in err
