"""``clipvip train`` end to end on generated videos: clipvip.data datasets + collate, clipvip.eval validation,
a corrupt video skipped and reported, best/last checkpoints, then ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import clipvip
from clipvip_apps.cli import main
from clipvip_apps.train.checkpoint import load_checkpoint

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "white": (240, 240, 240),
    "black": (10, 10, 10),
    "purple": (150, 30, 160),
    "cyan": (30, 210, 210),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from clipvip.video import write_video

    root = tmp_path_factory.mktemp("videos")
    rows = []
    for name, rgb in COLOURS.items():
        frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
        frames[:] = rgb
        for t in range(8):  # a moving grey square so frames differ
            frames[t, 8:16, 2 + 3 * t : 10 + 3 * t] = 128
        write_video(root / f"{name}.mp4", frames, fps=8)
        rows.append({"clip_id": name, "text": [f"a {name} video", f"something {name}"]})
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    rows.append({"clip_id": "broken", "text": "a broken video"})
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_cli_train_eval_skip_and_resume(corpus: Path, tmp_path: Path, capsys) -> None:
    data = f"{{samples: {corpus / 'ann.jsonl'}, fmt: jsonl, video_root: {corpus}, num_frames: 4, size: 32, context_length: 16}}"
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "tiny",
        "--set",
        f"run_dir={run}",
        "--set",
        f"train_data={data}",
        "--set",
        f"eval_data={data}",
        "--set",
        "batch_size=3",
        "--set",
        "eval_every=2",
        "--set",
        "max_steps=4",
        "--set",
        "save_every=2",
    ]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "done: 4 steps" in out.out and "best t2v/R@1" in out.out
    assert "broken.mp4" in out.out + out.err  # the skip summary names the bad file
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4]  # eval_every=2: steps 2 and 4 (the end)
    assert all(0.0 <= r["eval"]["t2v/R@1"] <= 100.0 for r in evals)
    assert (run / "checkpoints" / "best.pt").exists() and (run / "checkpoints" / "last.pt").exists()
    assert clipvip.load(run / "model").config.variant == "vip"

    assert main([*args[:-4], "--set", "max_steps=6", "--set", "save_every=2", "--resume"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_cli_reports_bad_config(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", "tiny", "--set", "lr=fast"]) == 2
    assert "lr must be a number" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--set", f"run_dir={tmp_path}"]) == 2
    assert "train_data is empty" in capsys.readouterr().err
