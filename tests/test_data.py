"""Annotation parsers (real benchmark files when present), retrieval / pretraining data sets, bad-sample handling."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clipvip.data import (
    AnnotationError,
    PretrainDataset,
    RetrievalDataset,
    Sample,
    SkipCounter,
    collate,
    expand_shards,
    load_annotations,
    resolve_videos,
)
from clipvip.tokenizer import tokenize
from clipvip.video import normalize, read_frames, read_middle_frame, write_video


@pytest.fixture
def ann(shared_fixtures: Path) -> Path:
    return shared_fixtures / "annotations"


def _frames(n: int, seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8).repeat(size // 4, 1).repeat(size // 4, 2)


# ----------------------------------------------------------------------------------- real annotation files


def test_didemo_paragraphs(ann: Path) -> None:
    raw = json.loads((ann / "DiDeMo_val_data.json").read_text())
    samples = load_annotations(ann / "DiDeMo_val_data.json", "didemo")
    assert len({r["video"] for r in raw}) == 1094  # file names, some videos under two containers
    assert len(samples) == len({s.video_id for s in samples}) == 1065  # the standard DiDeMo val size
    assert all(len(s.texts) == 1 for s in samples)
    first = samples[0]
    descs = [r["description"] for r in raw if r["video"] == first.file]
    assert first.texts[0] == " ".join(" ".join(d.split()) for d in descs)
    assert first.file.endswith(".mov") and first.video_id == first.file[: -len(".mov")]
    # every description is in exactly one paragraph: nothing lost, nothing repeated
    assert sum(len(s.texts[0].split()) for s in samples) == sum(len(r["description"].split()) for r in raw)
    by_id = {s.video_id: s for s in samples}
    for r in raw:
        assert by_id[r["video"].rsplit(".", 1)[0]].file.rsplit(".", 1)[0] == r["video"].rsplit(".", 1)[0]
    # a video under two containers: all its descriptions (of both names, file order), one deterministic file
    two = by_id["33234611@N00_3567949618_0bee41c6f7"]
    names = {"33234611@N00_3567949618_0bee41c6f7.mov", "33234611@N00_3567949618_0bee41c6f7.mp4"}
    assert two.texts[0] == " ".join(" ".join(r["description"].split()) for r in raw if r["video"] in names)
    assert two.file == "33234611@N00_3567949618_0bee41c6f7.mov"  # sorted first with a video extension


def test_didemo_one_sample_per_video(tmp_path: Path) -> None:
    rows = [
        {"video": "a_1.mp4", "description": "first of a"},
        {"video": "b_2.avi", "description": "only b"},
        {"video": "a_1.mov", "description": "second  of a"},
        {"video": "c_3.", "description": "bare dot"},
        {"video": "c_3.mp4", "description": "c again"},
        {"video": "d_4.3g2", "description": "odd container"},
        {"video": "a_1.mp4", "description": "third of a"},
    ]
    (tmp_path / "d.json").write_text(json.dumps([{**r, "times": [[0, 0]]} for r in rows]))
    s = load_annotations(tmp_path / "d.json", "didemo")
    assert [(x.video_id, x.texts, x.file) for x in s] == [
        ("a_1", ["first of a second of a third of a"], "a_1.mov"),
        ("b_2", ["only b"], "b_2.avi"),
        ("c_3", ["bare dot c again"], "c_3.mp4"),  # ".": no known extension, so the .mp4 copy
        ("d_4", ["odd container"], "d_4.3g2"),
    ]
    # "{root}/{video_id}.*" takes the annotated file when present, else any video extension (sorted)
    for name in ("a_1.mp4", "d_4.3g2", "c_3."):
        (tmp_path / name).write_bytes(b"x")
    res = resolve_videos(s, tmp_path, fmt="didemo")
    assert [Path(p).name for p in res.paths] == ["a_1.mp4", "c_3.", "d_4.3g2"] and res.missing[0][0] == "b_2"
    (tmp_path / "a_1.mov").write_bytes(b"x")
    assert Path(resolve_videos(s[:1], tmp_path, fmt="didemo").paths[0]).name == "a_1.mov"
    (tmp_path / "bad.json").write_text(json.dumps([{"video": 3, "description": "x"}]))
    with pytest.raises(AnnotationError, match=r"bad.json: entry 0"):
        load_annotations(tmp_path / "bad.json", "didemo")


def test_split_list_with_a_repeated_id_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "caps.json").write_text(json.dumps({"v1": ["a"], "v2": ["b"]}))
    (tmp_path / "list.txt").write_text("v1\nv2\nv1\n")
    with pytest.raises(AnnotationError, match="listed twice"):
        load_annotations(tmp_path / "caps.json", "msvd", split_list=tmp_path / "list.txt")


def test_activitynet_paragraphs(ann: Path) -> None:
    raw = json.loads((ann / "ActivityNetCaptions_val_1.json").read_text())
    samples = load_annotations(ann / "ActivityNetCaptions_val_1.json", "activitynet")
    assert [s.video_id for s in samples] == list(raw)
    s = samples[0]
    assert s.texts[0] == " ".join(" ".join(raw[s.video_id]["sentences"]).split())
    assert all("  " not in s.texts[0] and s.texts[0] == s.texts[0].strip() for s in samples)


def test_msvd_splits(ann: Path) -> None:
    sizes = {}
    for split in ("train", "val", "test"):
        samples = load_annotations(ann / "MSVD_captions_msvd.json", "msvd", split_list=ann / f"MSVD_{split}_list.txt")
        sizes[split] = len(samples)
    assert sizes == {"train": 1200, "val": 100, "test": 670}  # the standard MSVD split
    raw = json.loads((ann / "MSVD_captions_msvd.json").read_text())
    s = load_annotations(ann / "MSVD_captions_msvd.json", "msvd", split_list=ann / "MSVD_test_list.txt")[0]
    assert len(s.texts) == len(raw[s.video_id])


def test_msrvtt_id_list_needs_captions(tmp_path: Path, ann: Path) -> None:
    with pytest.raises(AnnotationError, match="captions="):
        load_annotations(ann / "MSRVTT_train.9k.csv", "msrvtt")
    ids = (ann / "MSRVTT_train.9k.csv").read_text().split()[1:]
    assert len(ids) == 9000
    sentences = [{"video_id": v, "caption": f"caption {k} of {v}", "sen_id": k} for v in ids for k in range(2)]
    cap = tmp_path / "MSRVTT_data.json"
    cap.write_text(json.dumps({"videos": [], "sentences": sentences}))
    samples = load_annotations(ann / "MSRVTT_train.9k.csv", "msrvtt", captions=cap)
    assert [s.video_id for s in samples] == ids and samples[5].texts == [
        f"caption 0 of {ids[5]}",
        f"caption 1 of {ids[5]}",
    ]


# --------------------------------------------------------------------------------- synthetic annotation files


def test_jsonl_msrvtt_csv_and_lsmdc(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        '{"clip_id": "v1", "text": "a  dog\\n runs"}\n\n{"clip_id": "v2", "text": ["x", "y"]}\n{"clip_id": "v1", "text": "z"}\n'
    )
    s = load_annotations(tmp_path / "a.jsonl", "jsonl")
    assert [(x.video_id, x.texts) for x in s] == [("v1", ["a dog runs", "z"]), ("v2", ["x", "y"])]
    (tmp_path / "bad.jsonl").write_text('{"clip_id": "v1", "text": "a"}\n{oops\n')
    with pytest.raises(AnnotationError, match="bad.jsonl:2"):
        load_annotations(tmp_path / "bad.jsonl", "jsonl")
    (tmp_path / "test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr7020,video7020,a man sings\n")
    assert load_annotations(tmp_path / "test.csv", "msrvtt") == [Sample("video7020", ["a man sings"])]
    (tmp_path / "lsmdc.csv").write_text(
        "0001_Movie_00.00.01.000-00.00.02.000\t00.00.01.000\t00.00.02.000\t00.00.01.000\t00.00.02.000\tSOMEONE walks.\n"
        "0001_Movie_00.00.03.000-00.00.04.000\t1\t2\t1\t2\tSOMEONE  sits.\n"
    )
    ls = load_annotations(tmp_path / "lsmdc.csv", "lsmdc")
    assert [x.texts for x in ls] == [["SOMEONE walks."], ["SOMEONE sits."]]
    with pytest.raises(ValueError, match="unknown annotation format"):
        load_annotations(tmp_path / "a.jsonl", "nope")  # type: ignore[arg-type]


def test_resolve_videos_reports_missing_once(tmp_path: Path, caplog) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mkv").write_bytes(b"x")
    samples = [Sample("a", ["t"]), Sample("b", ["t"]), Sample("c", ["t"]), Sample("d", ["t"])]
    res = resolve_videos(samples, tmp_path, template="{root}/{video_id}.mp4")
    assert [s.video_id for s in res.samples] == ["a"] and len(res.missing) == 3
    assert sum("3 of 4 videos missing" in r.message for r in caplog.records) == 1
    anyext = resolve_videos(samples, tmp_path, fmt="didemo")  # "{root}/{video_id}.*"
    assert [Path(p).name for p in anyext.paths] == ["a.mp4", "b.mkv"]
    with pytest.raises(FileNotFoundError, match="3 of 4"):
        resolve_videos(samples, tmp_path, template="{root}/{video_id}.mp4", on_missing="error")


# ------------------------------------------------------------------------------------------- data sets


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        write_video(root / f"v{i}.mp4", _frames(8 + i, seed=i), fps=8)
    good = (root / "v0.mp4").read_bytes()
    (root / "bad_truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "bad_garbage.mp4").write_bytes(b"\x00garbage" * 200)
    return root


def test_retrieval_train_and_eval(video_dir: Path) -> None:
    samples = [Sample(f"v{i}", [f"cap {i} a", f"cap {i} b", f"cap {i} c"]) for i in range(4)]
    train = RetrievalDataset(samples, video_dir, split="train", num_frames=4, size=32, context_length=16)
    assert len(train) == 4
    item = train[1]
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["text"].shape == (16,) and item["text"].dtype == torch.long and item["video_index"] == 1
    allowed = {tuple(tokenize([t], 16)[0].tolist()) for t in samples[1].texts}
    chosen = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        a, b = train[1], train[1]
        assert torch.equal(a["text"], b["text"]) and torch.equal(a["video"], b["video"])  # deterministic
        chosen.add(tuple(a["text"].tolist()))
    assert chosen <= allowed and len(chosen) > 1  # a random caption per epoch

    ev = RetrievalDataset(samples, video_dir, split="test", num_frames=4, size=32)
    assert ev.texts == [t for s in samples for t in s.texts]
    assert ev.text_to_video == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    it = ev[2]
    assert "text" not in it
    ref = normalize(read_frames(video_dir / "v2.mp4", num_frames=4, size=32).frames)
    assert torch.equal(it["video"], ref)


def test_multiworker_loader_skips_and_counts_bad_files(video_dir: Path) -> None:
    ids = ["v0", "bad_truncated", "v1", "v2", "bad_garbage", "v3", "missing_file"]
    samples = [Sample(v, [f"text {v}"]) for v in ids]
    ds = RetrievalDataset(samples, video_dir, split="eval", num_frames=4, size=32, timeout=20)
    assert len(ds.missing) == 1 and len(ds) == 6  # the missing file is reported at construction
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    counter, got = SkipCounter(), []
    for batch in loader:
        counter.update(batch)
        if "video" in batch:
            assert batch["video"].shape[1:] == (4, 3, 32, 32)
            got.extend(batch["video_index"].tolist())
    names = [ds.samples[i].video_id for i in got]
    assert sorted(names) == ["v0", "v1", "v2", "v3"]
    assert sorted(Path(s["path"]).stem for s in counter.items) == ["bad_garbage", "bad_truncated"]
    assert all(s["reason"] and isinstance(s["video_index"], int) for s in counter.items)
    summary = counter.summary()
    assert "skipped 2 of 6" in summary and "bad_" in summary


def test_collate_all_bad_and_mixed() -> None:
    bad = {"skipped": {"path": "x.mp4", "reason": "cannot open", "video_index": 3}}
    out = collate([bad])
    assert out["skipped"] == [bad["skipped"]] and out["video_index"].numel() == 0 and "video" not in out
    good = {"video": torch.zeros(2, 3, 4, 4), "video_index": 1, "path": "a.mp4"}
    out = collate([good, bad, good])
    assert out["video"].shape == (2, 2, 3, 4, 4) and out["video_index"].tolist() == [1, 1]
    assert out["path"] == ["a.mp4", "a.mp4"] and len(out["skipped"]) == 1


# --------------------------------------------------------------------------------------- pretraining corpus


def _write_shards(root: Path, video_dir: Path, n_shards: int, per_shard: int) -> list[str]:
    shards, k = [], 0
    for s in range(n_shards):
        path = root / f"shard-{s:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(per_shard):
                key = f"{k:09d}"
                video = (video_dir / f"v{k % 4}.mp4").read_bytes() if k != 5 else b"corrupt!" * 50
                members = {
                    f"{key}.mp4": video,
                    f"{key}.txt": f"subtitle {k}".encode(),
                    f"{key}.json": json.dumps({"key": key, "status": "success"}).encode(),
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                k += 1
        shards.append(str(path))
    return shards


@pytest.mark.parametrize("n_shards", [3, 1])  # 3 shards: split by shard; 1 shard: split by sample
def test_pretrain_webdataset_shards_multiworker(tmp_path: Path, video_dir: Path, n_shards: int) -> None:
    shards = _write_shards(tmp_path, video_dir, n_shards=n_shards, per_shard=9 // n_shards)
    assert expand_shards(str(tmp_path / ("shard-{00000.." + f"{n_shards - 1:05d}" + "}.tar"))) == shards
    caps = tmp_path / "captions.jsonl"
    # captions as `clipvip caption` writes them; clip 7 has none -> skipped with a reason
    caps.write_text(
        "".join(json.dumps({"clip_id": f"{k:09d}", "caption": f"caption {k}"}) + "\n" for k in range(9) if k != 7)
    )
    ds = PretrainDataset(str(tmp_path / "shard-*.tar"), captions=caps, num_frames=4, size=32, context_length=16)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    counter, clips = SkipCounter(), {}
    for batch in loader:
        counter.update(batch)
        if "video" not in batch:
            continue
        assert batch["video"].shape[1:] == (4, 3, 32, 32) and batch["frame"].shape[1:] == (1, 3, 32, 32)
        for i, cid in enumerate(batch["clip_id"]):
            assert cid not in clips  # each clip once across workers
            clips[cid] = {k: batch[k][i] for k in ("frame", "subtitle", "caption")}
    assert sorted(clips) == [f"{k:09d}" for k in range(9) if k not in (5, 7)]
    reasons = {Path(s["path"]).stem: s["reason"] for s in counter.items}
    assert set(reasons) == {"000000005", "000000007"} and "caption" in reasons["000000007"]
    c = clips["000000002"]
    assert torch.equal(c["subtitle"], tokenize(["subtitle 2"], 16)[0])
    assert torch.equal(c["caption"], tokenize(["caption 2"], 16)[0])
    assert torch.equal(c["frame"], normalize(read_middle_frame(video_dir / "v2.mp4", size=32)))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_shard_sample_parser(tmp_path: Path) -> None:
    """The one shard parser (PretrainDataset and the captioner): clip id from the json, else the key's base name;
    the video member by extension; a bad json counts as absent; a missing video is reported, not guessed."""
    from clipvip.data.shards import iter_shard_samples

    meta = {"clip_id": "vid.7", "subtitle": "from json"}
    shard = _tar(
        tmp_path / "s.tar",
        [
            ("a/000.json", json.dumps(meta).encode()),  # members of one key are adjacent; any order
            ("a/000.MP4", b"video-0"),
            ("a/000.txt", "ünïcode".encode()),
            ("a/001.webm", b"video-1"),
            ("a/001.json", b"{not json"),
            ("a/002.json", json.dumps({"clip_id": ""}).encode()),
            ("a/002.txt", b"no video here"),
            ("a/003.json", b"[1, 2]"),
            ("a/003.mkv", b"video-3"),
            ("a/.hidden.json", b"{}"),
        ],
    )
    got = [(s.key, s.clip_id, s.video_ext, s.video, s.meta, s.text) for s in iter_shard_samples(shard)]
    assert got == [
        ("a/000", "vid.7", "mp4", b"video-0", meta, "ünïcode"),
        ("a/001", "001", "webm", b"video-1", {}, None),
        ("a/002", "002", None, None, {"clip_id": ""}, "no video here"),
        ("a/003", "003", "mkv", b"video-3", {}, None),
    ]
    assert [s.clip_id for s in iter_shard_samples(shard, id_key="subtitle")] == ["from json", "001", "002", "003"]
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(ValueError, match=r"bad\.tar: not a readable tar shard"):
        list(iter_shard_samples(bad))
    with pytest.raises(ValueError, match=r"missing\.tar: not a readable tar shard"):
        list(iter_shard_samples(tmp_path / "missing.tar"))


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_pretrain_manifest(tmp_path: Path, video_dir: Path, kind: str) -> None:
    rows = [{"clip_id": f"c{i}", "video": f"v{i}.mp4", "subtitle": f"asr {i}", "caption": f"cap {i}"} for i in range(4)]
    rows.append({"clip_id": "cbad", "video": "bad_garbage.mp4", "subtitle": "x", "caption": "y"})
    path = tmp_path / f"m.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = PretrainDataset(path, video_root=video_dir, num_frames=4, size=32, context_length=16, mode="uniform")
    items = list(ds)
    good = [it for it in items if "skipped" not in it]
    assert [it["clip_id"] for it in good] == ["c0", "c1", "c2", "c3"]
    assert [it["skipped"]["path"] for it in items if "skipped" in it] == [str(video_dir / "bad_garbage.mp4")]
    ref = normalize(read_frames(video_dir / "v3.mp4", num_frames=4, size=32).frames)
    assert torch.equal(good[3]["video"], ref)


def test_pretrain_shards_split_across_ranks(tmp_path: Path, video_dir: Path, monkeypatch) -> None:
    """Two torch.distributed ranks (no workers) read disjoint clips that together cover the corpus."""
    _write_shards(tmp_path, video_dir, n_shards=4, per_shard=2)
    ds = PretrainDataset(str(tmp_path / "shard-*.tar"), num_frames=2, size=32, require_caption=False)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        seen.append([rec[0] for rec in ds._records()])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"{k:09d}" for k in range(8)]


def test_format_registry_is_the_one_place_a_format_lives(tmp_path: Path) -> None:
    """Names, default templates and options all come from ``READERS``; an option a format does not take is an
    error, never silently ignored."""
    from clipvip.data.annotations import DEFAULT_TEMPLATES, FORMATS, READERS, load_annotations

    assert FORMATS == tuple(READERS) and set(DEFAULT_TEMPLATES) == set(READERS)
    ann = tmp_path / "a.jsonl"
    ann.write_text('{"clip_id": "v1", "text": "a cat"}\n')
    with pytest.raises(ValueError, match="'jsonl' takes no captions option"):
        load_annotations(ann, "jsonl", captions=str(ann))
    with pytest.raises(ValueError, match="unknown annotation format"):
        load_annotations(ann, "youcook2")
