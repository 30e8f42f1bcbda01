"""Common mistakes get ONE line naming the input and what to do, a non-zero exit and no stray files (issue #15);
damaged index files are named by search/serve and rebuilt by `clipvip index` without re-encoding the rest."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import write_block_videos

import clipvip
from clipvip.index import AnnConfig, IndexConfig, VideoIndex, build_index
from clipvip_apps.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_error_line(capsys: pytest.CaptureFixture[str], rc: int, expect_rc: int = 2) -> str:
    """The command's stderr is one line (log records aside), no traceback, and the exit code is ``expect_rc``."""
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert rc == expect_rc, cap.err
    assert len(lines) == 1 and "Traceback" not in cap.err + cap.out, cap.err
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny model, three generated videos and an index over them (built with an HNSW ANN so a .faiss exists)."""
    root = tmp_path_factory.mktemp("errors")
    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(root / "model")
    write_block_videos(root / "videos", [8, 8, 8])
    cfg = IndexConfig(ann=AnnConfig(exact_max=1, tune_queries=3, tune_k=1))
    build_index(root / "videos", root / "idx", clipvip.load(root / "model"), root / "model", cfg, progress=False)
    assert (root / "idx" / "ann-1.faiss").is_file()
    return root


# ---------------------------------------------------------------------------------------------- user mistakes


def test_captioner_missing_folder_and_offline_hub_name(tmp_path, monkeypatch, capsys) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"clip_id": "a", "video": "a.mp4"}\n')
    out = tmp_path / "c.jsonl"
    rc = main(["caption", str(manifest), "--captioner", str(tmp_path / "missing-folder"), "--out", str(out)])
    line = one_error_line(capsys, rc)
    assert "missing-folder: no such folder" in line
    rc = main(["caption", str(manifest), "--captioner", "./missing-folder", "--out", str(out)])
    assert "./missing-folder: no such folder" in one_error_line(capsys, rc)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["caption", str(manifest), "--captioner", "no-such-org-15b/no-such-captioner", "--out", str(out)])
    line = one_error_line(capsys, rc)
    assert "no-such-org-15b/no-such-captioner: not in the local hub cache" in line and "HF_HUB_OFFLINE" in line
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def no_dns(*_a, **_k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr("clipvip.captioning.captioner.socket.getaddrinfo", no_dns)  # a machine without network
    rc = main(["caption", str(manifest), "--captioner", "no-such-org-15b/no-such-captioner", "--out", str(out)])
    assert "cannot be reached" in one_error_line(capsys, rc)
    assert _files(tmp_path) == {"m.jsonl"}


def test_train_set_with_a_template_parses_and_bad_data_args_leave_no_run_folder(tmp_path, capsys) -> None:
    from clipvip_apps.train import load_config

    cfg = load_config("tiny", ["train_data.template={root}/{video_id}", "train_data.fmt=didemo", "lr=3e-4"])
    assert cfg.train_data == {"template": "{root}/{video_id}", "fmt": "didemo"} and cfg.lr == 3e-4
    run = tmp_path / "run"
    rc = main(
        ["train", "--config", "tiny", "--set", "train_data.template={root}/{video_id}", "--set", f"run_dir={run}"]
    )
    line = one_error_line(capsys, rc)
    assert line.startswith("clipvip train: error: train_data:") and "'samples'" in line
    assert not run.exists()


def test_encode_video_out_is_a_folder(world, tmp_path, capsys) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    rc = main(["encode-video", str(world / "videos" / "v0.mp4"), "--model", str(world / "model"), "--out", str(out)])
    assert f"--out {out}: is a folder" in one_error_line(capsys, rc)
    assert _files(tmp_path) == {"existing"}
    ok = tmp_path / "e.npy"
    rc = main(["encode-video", str(world / "videos" / "v0.mp4"), "--model", str(world / "model"), "--out", str(ok)])
    assert rc == 0 and np.load(ok).shape == (1, 32) and _files(tmp_path) == {"existing", "e.npy", "e.paths.txt"}


def test_convert_onto_an_existing_file_or_model(world, tmp_path, capsys) -> None:
    target = tmp_path / "taken.bin"
    target.write_bytes(b"keep me")
    rc = main(["convert", str(world / "model"), str(target)])
    assert f"{target}: exists and is a file" in one_error_line(capsys, rc)
    assert target.read_bytes() == b"keep me"
    dst = tmp_path / "converted"
    assert main(["convert", str(world / "model"), str(dst)]) == 0
    before = (dst / "model.safetensors").stat().st_mtime_ns
    rc = main(["convert", str(world / "model"), str(dst)])
    assert "already holds a model; pass --force" in one_error_line(capsys, rc)
    assert (dst / "model.safetensors").stat().st_mtime_ns == before
    assert main(["convert", str(world / "model"), str(dst), "--force"]) == 0
    model_files = {"converted/config.json", "converted/model.safetensors", "converted/README.md"}  # + model card
    assert _files(tmp_path) == {"taken.bin", "converted", *model_files}


def test_a_video_given_as_the_model(world, tmp_path) -> None:
    """A real subprocess: the whole stderr is one line (no log noise, no torch text about weights_only)."""
    video = world / "videos" / "v0.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "clipvip_apps.cli", "search", str(world / "idx"), "dog", "--model", str(video)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"clipvip search: error: --model {video}: a video file, not a checkpoint; "
        "pass a clipvip model folder or a CLIP / CLIP-ViP weights file"
    ]
    assert not list(tmp_path.iterdir())


def test_ctrl_c_during_index_then_rerun_resumes(world, tmp_path, monkeypatch, capsys) -> None:
    import clipvip.index.build as build

    real, calls = build._decode, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(build, "_decode", interrupted)
    idx = tmp_path / "idx"
    args = ["index", str(world / "videos"), "--model", str(world / "model"), "--out", str(idx), "--quiet"]
    rc = main([*args, "--workers", "1", "--precision", "fp32"])
    line = one_error_line(capsys, rc, expect_rc=130)
    assert line == "clipvip index: interrupted; rerun the same command to resume (encoded work is kept)"
    assert not [p for p in idx.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(build, "_decode", real)
    assert main([*args, "--precision", "fp32"]) == 0
    assert "encoded 1, resumed 2" in capsys.readouterr().out
    assert len(VideoIndex.open(idx)) == 3


def test_serve_on_a_busy_port_fails_before_claiming_to_serve(world, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["serve", str(world / "idx"), "--port", str(port)])
    line = one_error_line(capsys, rc)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_web_422_does_not_echo_a_huge_query(world) -> None:
    from fastapi.testclient import TestClient

    from clipvip_apps.web import create_app_from_path

    client = TestClient(create_app_from_path(world / "idx"))
    r = client.get("/api/search", params={"q": "x" * 60_000})  # httpx caps a URL query at 64 kB
    assert r.status_code == 422 and len(r.content) < 1000
    (err,) = r.json()["detail"]
    assert err["type"] == "string_too_long" and err["input_chars"] == 60_000 and err["input"].startswith("xxx")
    assert client.get("/api/search", params={"q": "a dog", "k": 1}).status_code == 200


def test_a_long_library_message_is_one_capped_line(tmp_path, capsys) -> None:
    from clipvip_apps.cli import MAX_ERROR_CHARS

    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x80\x02garbage that is not a pickle\n" * 50)
    rc = main(["encode-text", "hello", "--model", str(bad), "--out", str(tmp_path / "t.npy")])
    line = one_error_line(capsys, rc)
    assert str(bad) in line and len(line) <= len("clipvip encode-text: error: ") + MAX_ERROR_CHARS
    assert _files(tmp_path) == {"weights.pt"}


# ---------------------------------------------------------------------------------------- damaged index files


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)])


@pytest.mark.parametrize("name", ["data-1.npy", "data-1.parquet", "ann-1.faiss", "index.json"])
def test_damaged_index_file_is_named_then_rebuilt(world, tmp_path, capsys, name) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(world / "idx", idx)
    _truncate(idx / name)
    for cmd in (["search", str(idx), "a dog"], ["serve", str(idx), "--port", "0"]):
        line = one_error_line(capsys, main(cmd))
        assert f"{idx / name}: damaged index" in line and "rerun `clipvip index`" in line

    cfg = IndexConfig(ann=AnnConfig(exact_max=1, tune_queries=3, tune_k=1))
    model = clipvip.load(world / "model")
    report = build_index(world / "videos", idx, model, world / "model", cfg, progress=False)
    # only what the damaged file held is encoded again: nothing for the ANN (rebuilt from the embeddings)
    assert report.encoded == (0 if name == "ann-1.faiss" else 3) and report.total_videos == 3
    assert report.unchanged == (3 if name == "ann-1.faiss" else 0)
    assert any(name in r for r in report.repaired) != (name == "ann-1.faiss")
    fixed, ref = VideoIndex.open(idx), VideoIndex.open(world / "idx")
    assert fixed.ann is not None and fixed.rows["path"].tolist() == ref.rows["path"].tolist()
    np.testing.assert_allclose(np.asarray(fixed.emb), np.asarray(ref.emb), atol=1e-6)
    assert main(["search", str(idx), "a dog", "-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    kept = {"index.json", "pending", "thumbs", "data-2.npy", "data-2.parquet", "ann-2.faiss"}
    if name == "index.json":  # set aside, and the index starts over at generation 1
        kept = {"index.json", "index.json.damaged", "pending", "thumbs", "data-1.npy", "data-1.parquet", "ann-1.faiss"}
    assert {p.name for p in idx.iterdir()} == kept
