"""``clipvip encode-video``: rows equal the model's own embedding of the reader's frames; bad files are NaN rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import clipvip
from clipvip.video import normalize, read_frames, write_video


def test_encode_video_cli(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = clipvip.CLIPViP(clipvip.tiny_config())
    model.save_pretrained(tmp_path / "m")
    rng = np.random.default_rng(0)
    vids = []
    for i in range(2):
        frames = rng.integers(0, 256, (6, 4, 4, 3)).astype(np.uint8).repeat(8, 1).repeat(8, 2)
        vids.append(write_video(tmp_path / f"v{i}.mp4", frames, fps=8))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    files = [str(vids[0]), str(bad), str(vids[1])]

    def encode(out: Path, *flags: str) -> np.ndarray:
        r = subprocess.run(
            [sys.executable, "-m", "clipvip_apps.cli", "encode-video", *files, "--model", str(tmp_path / "m"),
             "--out", str(out), *flags],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 1, r.stderr  # one file skipped
        assert "bad.mp4" in r.stderr
        if out.suffix == ".npz":
            z = np.load(out)
            emb, names = z["embeddings"], list(z["paths"])
        else:
            emb, names = np.load(out), out.with_name(out.stem + ".paths.txt").read_text().splitlines()
        assert names == [str(Path(f).resolve()) for f in files]  # which file each row is
        assert emb.shape[0] == 3 and np.isnan(emb[1]).all() and not np.isnan(emb[[0, 2]]).any()
        return emb

    emb = encode(tmp_path / "emb.npy", "--precision", "fp32")
    default = encode(tmp_path / "emb_default.npz", "--quiet")  # "auto": bf16 where the CPU has it
    loaded = clipvip.load(tmp_path / "m").eval()
    cfg = loaded.config
    x = torch.stack([normalize(read_frames(v, cfg.num_frames, cfg.vision.image_size).frames) for v in vids])
    with torch.inference_mode():
        ref = loaded.encode_video(x).numpy()
    np.testing.assert_allclose(emb[[0, 2]], ref, atol=1e-5)
    cosine = (default[[0, 2]] * ref).sum(-1) / np.linalg.norm(default[[0, 2]], axis=-1)
    assert (cosine > 0.999).all(), cosine
