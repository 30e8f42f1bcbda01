"""`clipvip index --from-embeddings`: parameters from the RAM budget, recall after the exact re-rank against brute
force, on-disk lists that survive moving the folder, and `clipvip search` / the web app unchanged on it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import save_tiny_model
from test_index import _video

import clipvip
from clipvip.embedjob.layout import write_part
from clipvip.index import VideoIndex, exact_topk
from clipvip.index.budget import (
    IndexParams,
    OnDiskConfig,
    choose_params,
    default_nlist,
    estimated_bytes,
    nprobe_ceiling,
    parse_size,
)
from clipvip.index.ondisk import OnDiskIndex, build_from_embeddings
from clipvip.index.store import IndexFormatError
from clipvip_apps.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def test_params_from_budget():
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5k") == 1536
    with pytest.raises(ValueError, match="memory size"):
        parse_size("lots")
    n, d = 10_000_000, 512
    assert default_nlist(n) == 65_536 and default_nlist(1_000_000) == 16_384 and default_nlist(100_000) == 1024
    p = choose_params(n, d, OnDiskConfig(max_index_memory=parse_size("4G")))
    # the largest code whose index fits: 512 4-bit sub-quantisers, 10M * (256 + 8) B + 65,536 lists * 31 padded
    # entries * 264 B + 128 MiB of centroids = 3.1 GiB <= 4 GiB
    assert p.pq_m == 512 and p.estimated_bytes == estimated_bytes(n, d, 65_536, 512, False) <= 4 << 30
    assert p.estimated_bytes == n * 264 + 65_536 * 31 * 264 + 65_536 * 512 * 4 + 16 * 512 * 4
    assert choose_params(n, d, OnDiskConfig(max_index_memory=parse_size("2G"))).pq_m == 256  # 3.1 > 2 >= 1.7
    assert choose_params(n, d, OnDiskConfig(max_index_memory=parse_size("1G"))).pq_m == 128
    with pytest.raises(ValueError, match="too small"):
        choose_params(n, d, OnDiskConfig(max_index_memory=parse_size("100M")))
    assert choose_params(5000, d, OnDiskConfig()).factory.endswith(",Flat")  # too few vectors to train a PQ
    opq = choose_params(n, d, OnDiskConfig(max_index_memory=parse_size("1G"), opq=True))
    assert opq.factory == "OPQ128,IVF65536,PQ128x4fs"
    assert opq.estimated_bytes == estimated_bytes(n, d, 65_536, 128, True)
    with pytest.raises(ValueError, match="divisible"):
        choose_params(n, d, OnDiskConfig(pq_m=48 + 7))
    for params in (p, opq, choose_params(5000, d, OnDiskConfig())):  # an index's meta keeps only the factory string
        assert IndexParams.parse(params.factory, params.estimated_bytes) == params


def test_retune_lifts_a_capped_nprobe(tmp_path, model_dir, caplog):
    """A ceiling of 1 list caps recall below the target: the tuner keeps its best, says so, and ``--retune`` with
    the default ceiling (max(256, nlist/8)) reaches the target without rebuilding the lists."""
    assert nprobe_ceiling(8192, OnDiskConfig()) == 1024 and nprobe_ceiling(64, OnDiskConfig()) == 256
    assert nprobe_ceiling(8192, OnDiskConfig(max_nprobe=300)) == 300
    x = _clustered(12_000, 32, 0)
    folder = _synthetic_folder(tmp_path / "emb", x, _meta(model_dir), 5000)
    capped = OnDiskConfig(max_index_memory=parse_size("64M"), nlist=64, pq_m=8, max_nprobe=1)
    with caplog.at_level(logging.WARNING, logger="clipvip.index.ondisk_tune"):
        first = build_from_embeddings(folder, tmp_path / "idx", capped, progress=False)
    assert first.nprobe == 1 and first.recall < capped.target_recall and "below the 0.97 target" in caplog.text
    lists = next((tmp_path / "idx").glob("*.ivfdata"))
    mtime = lists.stat().st_mtime_ns
    args = ["index", "--from-embeddings", str(folder), "--out", str(tmp_path / "idx"), "--retune", "--quiet"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["ann"]["knob"] > 1 and meta["ann"]["recall_at_10"] >= capped.target_recall
    assert lists.stat().st_mtime_ns == mtime  # tuned, not rebuilt
    assert VideoIndex.open(tmp_path / "idx").ann.knob == meta["ann"]["knob"]


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Points around 64 fixed centres (the same for every seed), L2-normalised."""
    centres = np.random.default_rng(0).standard_normal((64, d))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 64, n)] + 0.6 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _synthetic_folder(root: Path, x: np.ndarray, embed_meta: dict, part_rows: int) -> Path:
    for sub in ("embeddings", "metadata", "stats"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "embed.json").write_text(json.dumps(embed_meta))
    for p, lo in enumerate(range(0, len(x), part_rows)):
        ids = range(lo, min(len(x), lo + part_rows))
        write_part(root, p, x[lo : lo + part_rows], [{"key": str(i), "path": f"/v/{i}.mp4"} for i in ids], {}, "fp16")
    return root


def _meta(model_dir: Path) -> dict:
    model = clipvip.load(model_dir)
    from clipvip.index import model_fingerprint

    return {
        "model": {"path": str(model_dir), "fingerprint": model_fingerprint(model), "config": model.config.to_dict()},
        "settings": {"num_frames": 4, "image_size": 32, "window": None, "stride": None},
    }


def test_ivfpq_on_disk_recall_and_move(tmp_path, model_dir):
    x = _clustered(12_000, 32, 0)
    folder = _synthetic_folder(tmp_path / "emb", x, _meta(model_dir), 5000)
    cfg = OnDiskConfig(max_index_memory=parse_size("64M"), nlist=64, pq_m=8)
    report = build_from_embeddings(folder, tmp_path / "idx", cfg, progress=False)
    assert report.params.factory == "IVF64,PQ8x4fs" and report.recall >= cfg.target_recall
    assert not (tmp_path / "idx" / "build").exists()
    lists = next((tmp_path / "idx").glob("*.ivfdata"))
    assert lists.stat().st_size >= 12_000 * (4 + 8)  # the codes + ids live in the memory-mapped lists file
    assert (tmp_path / "idx" / "ivfpq-1.index").stat().st_size < lists.stat().st_size

    shutil.move(tmp_path / "idx", tmp_path / "moved")  # the lists are found beside the index file
    index = VideoIndex.open(tmp_path / "moved")
    assert isinstance(index, OnDiskIndex) and len(index) == 12_000
    queries = _clustered(50, 32, 1)  # held out: same distribution, not rows of the index
    ref = x.astype(np.float16).astype(np.float32)
    _, truth = exact_topk(ref, queries, 10)
    found = np.array([[h.row for h in index.search(q, 10, per_video=False)] for q in queries])
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95
    hits = index.search(queries[0], 3)
    assert [h.path for h in hits] == [f"/v/{i}.mp4" for i in truth[0][:3]]  # metadata read by row id
    np.testing.assert_allclose([h.score for h in hits], ref[truth[0][:3]] @ queries[0], rtol=1e-5)
    assert all(h.row != 7 for h in index.similar(7, 5))

    meta = json.loads((tmp_path / "moved" / "index.json").read_text())
    del meta["ann"]["list_table"]  # the layout of an earlier version (FAISS's own list file): refused, by name
    (tmp_path / "moved" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="moved: built by an older clipvip"):
        VideoIndex.open(tmp_path / "moved")


@pytest.mark.parametrize("factory", ["IVF32,PQ16x4fs", "OPQ8,IVF32,PQ8x4fs", "IVF32,Flat"])
def test_disk_lists_search_like_lists_in_ram(tmp_path, factory):
    """The independent reference is FAISS itself: the same trained index with every vector added in RAM. Our
    block-by-block build (unpacked, re-packed as whole fast-scan blocks + ids, then memory-mapped) must return
    exactly its ids and distances. At risk: list sizes that are not a multiple of the 32-vector block, and lists
    that reach a multiple of a block's byte size (256 entries here) between blocks, where FAISS's own merge of
    block lists corrupts memory."""
    import faiss

    from clipvip.index.disklists import attach_lists, write_lists

    x = _clustered(20_000, 32, 0)
    trained = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    faiss.write_index(trained, str(tmp_path / "trained.index"))
    ref = faiss.read_index(str(tmp_path / "trained.index"))
    ref.add_with_ids(x, np.arange(len(x)))
    blocks = []
    for lo in range(0, len(x), 700):  # blocks whose list pieces end mid fast-scan block
        part = faiss.read_index(str(tmp_path / "trained.index"))
        part.add_with_ids(x[lo : lo + 700], np.arange(lo, min(len(x), lo + 700)))
        blocks.append(str(tmp_path / f"block{lo}.index"))
        faiss.write_index(part, blocks[-1])
    sizes = [faiss.extract_index_ivf(ref).invlists.list_size(j) for j in range(32)]
    assert any(s % 32 for s in sizes)
    write_lists(trained, blocks, tmp_path / "l.ivfdata", tmp_path / "l.ivflists")
    (tmp_path / "moved").mkdir()
    for name in ("l.ivfdata", "l.ivflists"):
        shutil.move(tmp_path / name, tmp_path / "moved" / name)
    disk = attach_lists(faiss.read_index(str(tmp_path / "trained.index")), tmp_path / "moved" / "l.ivflists", len(x))
    assert disk.ntotal == len(x)
    q = _clustered(40, 32, 1)
    for nprobe in (1, 5, 32):
        faiss.extract_index_ivf(ref).nprobe = faiss.extract_index_ivf(disk).nprobe = nprobe
        for k in (10, 100):  # k > 20: fast-scan's reservoir, not its heap
            d_ref, i_ref = ref.search(q, k)
            d_disk, i_disk = disk.search(q, k)
            np.testing.assert_array_equal(i_disk, i_ref)
            np.testing.assert_array_equal(d_disk, d_ref)


def test_cli_embed_index_search_serve(tmp_path, model_dir, capfd):
    capsys = capfd  # file-descriptor level: FAISS's own prints must not reach stdout (`search --json` is piped)
    vids = tmp_path / "videos"
    for i in range(6):
        _video(vids / f"clip{i}.mp4", i)
    emb = tmp_path / "emb"
    assert (
        main(["embed", str(vids), "--model", str(model_dir), "--out", str(emb), "--precision", "fp32", "--quiet"]) == 0
    )
    idx = tmp_path / "idx"
    assert main(["index", "--from-embeddings", str(emb), "--out", str(idx), "--quiet"]) == 0
    assert "6 vectors, IVF1,Flat on disk" in capsys.readouterr().out
    assert main(["index", "--from-embeddings", str(emb), "--out", str(idx), "--quiet"]) == 0  # rebuilt in place
    capsys.readouterr()
    assert sorted(p.name for p in idx.iterdir()) == [
        "index.json",
        "ivfpq-2.index",
        "lists-2.ivfdata",
        "lists-2.ivflists",
    ]
    (tmp_path / "videoidx").mkdir()
    (tmp_path / "videoidx" / "index.json").write_text(json.dumps({"format": 1, "generation": 1}))
    assert main(["index", "--from-embeddings", str(emb), "--out", str(tmp_path / "videoidx")]) != 0
    assert "holds a `clipvip index` of videos" in capsys.readouterr().err
    assert main(["search", str(idx), "a moving colour block", "-k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["results"]

    model = clipvip.load(model_dir)
    with torch.inference_mode():
        q = model.encode_text(["a moving colour block"])[0].numpy()
    vecs = np.concatenate([np.load(p).astype(np.float32) for p in sorted((emb / "embeddings").glob("*.npy"))])
    paths = [str(p.resolve()) for p in sorted(vids.glob("*.mp4"))]
    order = np.argsort(-(vecs @ q))[:3]
    assert [r["path"] for r in got] == [paths[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in got], (vecs @ q)[order], rtol=1e-4)

    from fastapi.testclient import TestClient

    from clipvip_apps.web import create_app_from_path

    client = TestClient(create_app_from_path(idx))
    info = client.get("/api/info").json()
    assert info["rows"] == 6 and info["search"] == "ivf"
    res = client.get("/api/search", params={"q": "a moving colour block", "k": 3}).json()["results"]
    assert [r["row"] for r in res] == order.tolist()
    sim = client.get("/api/similar", params={"row": 0, "k": 2}).json()
    assert len(sim["results"]) == 2 and all(r["row"] != 0 for r in sim["results"])
    assert client.get(f"/api/video/{res[0]['video']}").status_code == 200

    assert main(["index", "--out", str(tmp_path / "x")]) != 0
    assert "give VIDEO_DIR and --model" in capsys.readouterr().err


def test_folder_reads_rows_and_metadata_concurrently_as_one_by_one(tmp_path, model_dir):
    """``read_rows`` (threads above 16 rows) and ``rows`` (row groups read concurrently) return what reading each
    row alone returns, across parts and row groups, in the order asked, repeated ids included."""
    from clipvip.embedjob.layout import EmbeddingFolder

    x = _clustered(6_000, 32, 3)
    root = _synthetic_folder(tmp_path / "emb", x, _meta(model_dir), 2_500)
    folder = EmbeddingFolder(root, cache_groups=2)  # a tiny cache: groups are evicted while a batch is read
    ids = np.random.default_rng(0).integers(0, 6_000, 300)
    ids[5] = ids[77]
    np.testing.assert_array_equal(folder.read_rows(ids), x[ids].astype(np.float16).astype(np.float32))
    one = [folder.read_rows(np.asarray([i]))[0] for i in ids[:20]]
    np.testing.assert_array_equal(np.stack(one), folder.read_rows(ids[:20]))
    cols = ("path", "start")
    got = folder.rows(ids[:40].tolist(), cols)
    assert got == [{"path": f"/v/{i}.mp4", "start": None} for i in ids[:40]]
    assert folder.rows(ids[:40].tolist(), cols) == got  # cached groups mixed with fresh ones that evict them
    assert folder.rows(ids[:40].tolist()) == [EmbeddingFolder(root).row(int(i)) for i in ids[:40]]
