"""`clipvip index` / `clipvip search` end to end on generated videos, checked against direct encoding and a
brute-force ranking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import clipvip
from clipvip.index import AnnConfig, IndexConfig, VideoIndex, build_index, windows
from clipvip.video import normalize, read_frames, write_video
from clipvip_apps.cli import main


def _video(path: Path, seed: int, frames: int = 8, fps: float = 4.0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 8, 8, 3)).repeat(4, 1).repeat(4, 2)  # 32x32 colour blocks, moving
    x = np.stack([np.roll(base[0], t * 2, axis=1) for t in range(frames)]).astype(np.uint8)
    return write_video(path, x, fps=fps)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(d)
    return d


def _direct_embedding(model: clipvip.CLIPViP, path: Path, start=None, end=None) -> np.ndarray:
    vf = read_frames(path, model.config.num_frames, model.config.vision.image_size, start=start, end=end)
    with torch.inference_mode():
        return model.encode_video(normalize(vf.frames)[None])[0].numpy()


def test_windows_cover_the_video():
    assert windows(None, 2.0, None) == [(0.0, None)]
    assert windows(3.0, None, None) == [(0.0, 3.0)]
    assert windows(1.5, 2.0, None) == [(0.0, 1.5)]
    assert windows(6.0, 2.0, None) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert windows(5.0, 2.0, None) == [(0.0, 2.0), (2.0, 4.0), (3.0, 5.0)]
    assert windows(5.0, 2.0, 1.5) == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]


def test_cli_index_search_incremental(tmp_path, model_dir, capsys):
    vids = tmp_path / "videos"
    paths = [_video(vids / ("sub" if i % 2 else "") / f"clip{i}.mp4", i) for i in range(5)]
    (vids / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    (vids / "notes.txt").write_text("ignored: not a video extension")
    idx = tmp_path / "idx"

    assert (
        main(["index", str(vids), "--model", str(model_dir), "--out", str(idx), "--quiet", "--precision", "fp32"]) == 0
    )
    out = capsys.readouterr().out
    assert "5 videos" in out and "encoded 5" in out and "failed 1" in out and "broken.mp4" in out

    model = clipvip.load(model_dir)
    index = VideoIndex.open(idx)
    assert sorted(index.videos) == sorted(str(p.resolve()) for p in paths)
    for row, p in enumerate(index.rows["path"]):  # stored embeddings = encoding the file directly
        np.testing.assert_allclose(index.emb[row], _direct_embedding(model, Path(p)), atol=1e-5)
        assert index.thumb_path(row).is_file()
    assert index.meta["failed"][0]["path"].endswith("broken.mp4")

    # The default (optimize_for_inference "auto": bf16 where the CPU has it) agrees, and searches with the same
    # fp32 model since the fingerprint is taken from the stored weights.
    assert main(["index", str(vids), "--model", str(model_dir), "--out", str(tmp_path / "idx_auto"), "--quiet"]) == 0
    capsys.readouterr()
    auto = VideoIndex.open(tmp_path / "idx_auto")
    assert auto.meta["model"]["fingerprint"] == index.meta["model"]["fingerprint"]
    for row, p in enumerate(auto.rows["path"]):
        assert float(np.dot(auto.emb[row], _direct_embedding(model, Path(p)))) > 0.999

    query = "a bright red square"
    assert main(["search", str(idx), query, "-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    with torch.inference_mode():
        q = model.encode_text([query])[0].numpy()
    scores = [float(np.dot(_direct_embedding(model, p), q)) for p in paths]  # brute-force reference
    expected = [str(paths[i].resolve()) for i in np.argsort(scores)[::-1][:3]]
    assert [r["path"] for r in res] == expected
    np.testing.assert_allclose([r["score"] for r in res], sorted(scores, reverse=True)[:3], atol=1e-5)
    assert main(["search", str(idx), query, "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[-1] == expected[0]

    # second run: one changed, one deleted, one new, three untouched -> only changed + new are encoded
    _video(paths[1], 100)  # new content
    os.utime(paths[1], ns=(paths[1].stat().st_atime_ns, paths[1].stat().st_mtime_ns + 10**9))
    paths[2].unlink()
    new = _video(vids / "new.mp4", 7)
    assert (
        main(["index", str(vids), "--model", str(model_dir), "--out", str(idx), "--quiet", "--precision", "fp32"]) == 0
    )
    out = capsys.readouterr().out
    assert "encoded 2" in out and "unchanged 3" in out and "deleted 1" in out
    index = VideoIndex.open(idx)
    assert sorted(index.videos) == sorted(str(p.resolve()) for p in (paths[0], paths[1], paths[3], paths[4], new))
    r1 = index.videos.index(str(paths[1].resolve()))
    np.testing.assert_allclose(index.emb[r1], _direct_embedding(model, paths[1]), atol=1e-5)
    assert sorted(f.name for f in (idx / "thumbs").iterdir()) == sorted(index.rows["thumb"])  # stale ones gone
    assert sorted(f.name for f in idx.iterdir() if f.name.startswith("data-")) == ["data-2.npy", "data-2.parquet"]

    # a different model must not be mixed into the index
    other = tmp_path / "other"
    torch.manual_seed(1)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(other)
    assert main(["index", str(vids), "--model", str(other), "--out", str(idx), "--quiet", "--precision", "fp32"]) == 2
    assert "another model" in capsys.readouterr().err
    assert main(["search", str(idx), "x", "--model", str(other)]) == 2
    assert "not the model" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nothing"), "x"]) == 2


class _Interrupt(KeyboardInterrupt):
    pass


def test_interrupted_build_loses_nothing(tmp_path, model_dir):
    vids = tmp_path / "v"
    for i in range(6):
        _video(vids / f"c{i}.mp4", i)
    model = clipvip.load(model_dir)
    calls = {"n": 0}
    real = model.encode_video

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Interrupt()
        return real(x)

    model.encode_video = flaky
    cfg = IndexConfig(chunk_rows=1, decode_workers=1)
    with pytest.raises(_Interrupt):
        build_index(vids, tmp_path / "idx", model, model_dir, cfg, progress=False)
    assert len(list((tmp_path / "idx" / "pending").glob("*.parquet"))) == 3  # the 3 finished videos are on disk
    with pytest.raises(ValueError, match="no finished build"):
        VideoIndex.open(tmp_path / "idx")

    model.encode_video = real
    rep = build_index(vids, tmp_path / "idx", model, model_dir, cfg, progress=False)
    assert (rep.resumed, rep.encoded, rep.total_videos) == (3, 3, 6)
    fresh = build_index(vids, tmp_path / "fresh", model, model_dir, cfg, progress=False)
    assert fresh.encoded == 6
    a, b = VideoIndex.open(tmp_path / "idx"), VideoIndex.open(tmp_path / "fresh")
    pd.testing.assert_frame_equal(a.rows.drop(columns="thumb"), b.rows.drop(columns="thumb"))
    np.testing.assert_allclose(a.emb, b.emb, atol=1e-6)
    assert not list((tmp_path / "idx" / "pending").iterdir())


def test_windows_and_ann_path(tmp_path, model_dir, capsys):
    vids = tmp_path / "v"
    long = _video(vids / "long.mp4", 0, frames=48, fps=8)  # 6 s
    _video(vids / "short.mp4", 1, frames=8, fps=8)  # 1 s
    model = clipvip.load(model_dir)
    rep = build_index(vids, tmp_path / "idx", model, model_dir, IndexConfig(window=2.0), progress=False)
    assert rep.total_rows == 4
    index = VideoIndex.open(tmp_path / "idx")
    lr = index.rows[index.rows["path"] == str(long.resolve())]
    assert lr[["start", "end"]].to_numpy().tolist() == [[0.0, 2.0], [2.0, 4.0], [4.0, 6.0]]
    for row, (s, e) in zip(lr.index, lr[["start", "end"]].to_numpy(), strict=True):
        np.testing.assert_allclose(index.emb[row], _direct_embedding(model, long, s, e), atol=1e-5)
    # a window query lands on its own moment; per-video collapsing returns each video once
    hits = index.search(np.asarray(index.emb[lr.index[1]]), k=5)
    assert hits[0].row == lr.index[1] and (hits[0].start, hits[0].end) == (2.0, 4.0)
    assert len(hits) == 2 and len({h.video for h in hits}) == 2
    assert len(index.search(np.asarray(index.emb[0]), k=5, per_video=False)) == 4
    more = index.similar(int(lr.index[0]), k=5)
    assert [h.path for h in more] == [str((vids / "short.mp4").resolve())]
    assert main(["search", str(tmp_path / "idx"), "anything", "--all-windows", "-k", "4"]) == 0
    assert "[0:02.0-0:04.0]" in capsys.readouterr().out

    # the same collection with ANN forced on (tiny threshold) returns the exact top-1
    ann_cfg = IndexConfig(window=2.0, ann=AnnConfig(exact_max=2))
    rep = build_index(vids, tmp_path / "idx_ann", model, model_dir, ann_cfg, progress=False)
    assert rep.ann == "hnsw"
    ai = VideoIndex.open(tmp_path / "idx_ann")
    assert ai.ann is not None
    for row in range(4):
        assert ai.search(np.asarray(ai.emb[row]), 1, per_video=False)[0].row == row


def test_index_real_fixture_videos(tmp_path, model_dir, shared_fixtures):
    model = clipvip.load(model_dir)
    src = shared_fixtures / "videos"
    rep = build_index(src, tmp_path / "idx", model, model_dir, IndexConfig(window=4.0), progress=False)
    names = {p.name for p in src.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mkv", ".webm")}
    index = VideoIndex.open(tmp_path / "idx")
    assert {Path(p).name for p in index.videos} | {Path(p).name for p, _ in rep.failed} == names
    assert not rep.failed, rep.failed
    demo = index.rows[index.rows["path"].str.endswith("mmaction2_demo.mp4")]
    assert len(demo) >= 3 and demo["end"].max() == pytest.approx(demo["duration"].iloc[0])
    assert np.allclose(np.linalg.norm(index.emb, axis=1), 1.0, atol=1e-4)


def test_one_model_fingerprint_ignores_reader_settings_and_reads_old_records() -> None:
    """The eval cache, the index and the embed job share ONE fingerprint: num_frames (a reader default) does not
    change it, weights do; an index written with the old 32-digit fingerprint still matches."""
    import dataclasses

    from clipvip import CLIPViP, tiny_config
    from clipvip.weights.fingerprint import model_fingerprint, same_model

    model = CLIPViP(tiny_config("vip"))
    fp = model_fingerprint(model)
    other_frames = CLIPViP(dataclasses.replace(model.config, num_frames=model.config.num_frames + 4))
    other_frames.load_state_dict(model.state_dict())
    assert model_fingerprint(other_frames) == fp and len(fp) == 64
    assert same_model(fp[:32], fp) and same_model(fp, fp)
    assert not same_model(fp[:8], fp)
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    assert not same_model(fp, model_fingerprint(model))


def test_other_settings_reindex_after_saying_so(tmp_path, model_dir, capsys, caplog):
    """Re-running ``index`` with another --window re-encodes everything (with a warning), leaving no file of the
    old generation; another model is refused with one line naming --reindex, which then switches the index."""
    vids = tmp_path / "v"
    long = _video(vids / "long.mp4", 0, frames=48, fps=8)  # 6 s
    _video(vids / "short.mp4", 1, frames=8, fps=8)
    idx = tmp_path / "idx"
    base = ["index", str(vids), "--out", str(idx), "--quiet", "--precision", "fp32"]
    assert main([*base, "--model", str(model_dir)]) == 0
    assert len(VideoIndex.open(idx)) == 2
    with caplog.at_level("WARNING"):
        assert main([*base, "--model", str(model_dir), "--window", "2"]) == 0
    assert "re-encoding every video (window None -> 2.0, stride None -> 2.0)" in caplog.text
    assert "encoded 2" in capsys.readouterr().out
    index = VideoIndex.open(idx)
    assert len(index) == 4 and index.meta["settings"]["window"] == 2.0
    np.testing.assert_allclose(index.emb[0], _direct_embedding(clipvip.load(model_dir), long, 0.0, 2.0), atol=1e-5)
    assert sorted(f.name for f in idx.iterdir() if f.name.startswith("data-")) == ["data-1.npy", "data-1.parquet"]

    other = tmp_path / "other"
    torch.manual_seed(1)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(other)
    assert main([*base, "--model", str(other), "--window", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another model" in err and "--reindex" in err and "\n" not in err
    assert main([*base, "--model", str(other), "--window", "2", "--reindex"]) == 0
    assert VideoIndex.open(idx).meta["model"]["path"] == str(other.resolve())
    assert main(["search", str(idx), "x"]) == 0
