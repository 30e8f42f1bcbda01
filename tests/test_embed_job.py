"""`clipvip embed`: the parts layout read the way embedding-reader reads it, resume, inputs (folder, manifest,
WebDataset shards), identical embeddings from every engine (one process, 2 gloo ranks, Ray Data, Ray Data with
an encoder actor killed mid-run), and the decoders: worker processes writing into shared buffers give exactly what
decode threads give, a worker that dies is replaced, a file that kills it every time is named as failed, and too
little /dev/shm falls back to threads."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support import run_ranks
from test_index import _direct_embedding

import clipvip
from clipvip.embedjob import EmbedConfig, EmbeddingFolder, plan_parts, prepare_job
from clipvip.embedjob.ray_data import EncoderActor, run_embed_ray
from clipvip.jobs import run_job
from clipvip_apps.cli import main


def _cfg(model_dir: Path, out: Path, **kw) -> EmbedConfig:
    return EmbedConfig(model=str(model_dir), out=str(out), batch_size=3, precision="fp32", threads=1, **kw)


def _read_like_embedding_reader(root: Path) -> tuple[np.ndarray, list[dict]]:
    """embedding-reader's ParquetNumpyReader path, replicated (installing it would downgrade pandas to 2.x):
    sorted ``**/*.npy`` under embeddings/ zipped with sorted ``**/*.parquet`` under metadata/, counts from the
    .npy headers, rows read as raw bytes after the header."""
    npys = sorted(str(p) for p in (root / "embeddings").glob("**/*.npy"))
    metas = sorted(str(p) for p in (root / "metadata").glob("**/*.parquet"))
    assert len(npys) == len(metas)
    embs, rows = [], []
    for npy, meta in zip(npys, metas, strict=True):
        with open(npy, "rb") as f:
            np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            offset = f.tell()
            assert not fortran
            f.seek(offset)
            data = np.frombuffer(f.read(shape[0] * shape[1] * dtype.itemsize), dtype=dtype).reshape(shape)
        table = pq.read_table(meta)
        assert table.num_rows == shape[0], f"{npy} and {meta} are not aligned"
        embs.append(data.astype(np.float32))
        rows += table.to_pylist()
    return np.concatenate(embs), rows


def _embeddings(root: Path) -> dict[int, np.ndarray]:
    return {int(p.stem.split("_")[1]): np.load(p) for p in sorted((root / "embeddings").glob("emb_*.npy"))}


def test_folder_layout_resume_and_embedding_reader(tmp_path, model_dir, videos, capsys):
    out = tmp_path / "emb"
    args = ["embed", str(videos), "--model", str(model_dir), "--out", str(out), "--rows-per-part", "3"]
    args += ["--batch-size", "2", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    said = capsys.readouterr()
    assert "3 parts written" in said.out and "7 videos" in said.out and "1 files skipped" in said.out
    assert "broken.mp4" in said.err

    emb, rows = _read_like_embedding_reader(out)
    assert emb.shape == (7, 32) and np.load(out / "embeddings" / "emb_00000.npy").dtype == np.float16
    model = clipvip.load(model_dir)
    fp = json.loads((out / "embed.json").read_text())["model"]["fingerprint"]
    for e, r in zip(emb, rows, strict=True):  # each row = encoding that file directly (fp16 storage)
        np.testing.assert_allclose(e, _direct_embedding(model, Path(r["path"])), atol=2e-3)
        assert r["model"] == fp and r["key"] == Path(r["path"]).stem and r["duration"] == pytest.approx(2.0)
    failed = [f for p in sorted((out / "stats").glob("*.json")) for f in json.loads(p.read_text())["failed"]]
    assert [Path(f["file"]).name for f in failed] == ["broken.mp4"]

    # a rerun skips every part; a part whose stats (the done mark) are gone is redone, identically
    before = _embeddings(out)
    (out / "stats" / "stats_00001.json").unlink()
    assert main(args) == 0
    assert "1 parts written, 2 already done" in capsys.readouterr().out
    after = _embeddings(out)
    assert all(np.array_equal(before[p], after[p]) for p in before)

    folder = EmbeddingFolder(out)  # the reading side used by the index: ids run over the parts in order
    assert len(folder) == 7 and folder.row(4)["path"] == rows[4]["path"]
    np.testing.assert_array_equal(folder.vectors(np.array([6, 0])), emb[[6, 0]])

    with pytest.raises(ValueError, match="another model or other settings"):
        prepare_job(_cfg(model_dir, out, num_frames=2), plan_parts([str(videos)], 3))


def test_manifest_and_webdataset_shards(tmp_path, model_dir, videos):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"video": str(videos / f"clip{i}.mp4"), "caption": f"cap {i}"}) + "\n" for i in range(3))
    )
    job = prepare_job(_cfg(model_dir, tmp_path / "m"), plan_parts([str(manifest)], 2))
    assert job.num_parts == 2 and not run_job(job, progress=False).failed
    _, rows = _read_like_embedding_reader(tmp_path / "m")
    assert [r["caption"] for r in rows] == ["cap 0", "cap 1", "cap 2"]

    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):  # video2dataset layout: {key}.mp4 + {key}.json / {key}.txt; one sample has no video
        with tarfile.open(shards / f"{s:05d}.tar", "w") as tar:
            for i in range(3 * s, 3 * s + 3):
                members = {f"{i:04d}.txt": f"subtitle {i}".encode()}
                if i != 4:
                    members[f"{i:04d}.mp4"] = (videos / f"clip{i}.mp4").read_bytes()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    job = prepare_job(_cfg(model_dir, tmp_path / "s"), plan_parts([str(shards)]))
    summary = run_job(job, progress=False)
    assert job.num_parts == 2 and summary.total("done") == 5 and summary.total("failed") == 1
    emb, rows = _read_like_embedding_reader(tmp_path / "s")
    assert [r["key"] for r in rows] == ["0000", "0001", "0002", "0003", "0005"]
    assert rows[3]["caption"] == "subtitle 3" and rows[3]["path"].endswith("00001.tar#0003.mp4")
    local, local_rows = _read_like_embedding_reader(_run_local(tmp_path / "l", model_dir, videos))
    by_name = {Path(r["path"]).stem: e for e, r in zip(local, local_rows, strict=True)}
    for e, r in zip(emb, rows, strict=True):  # bytes from a shard = the same file read from disk
        np.testing.assert_allclose(e, by_name[f"clip{int(r['key'])}"], atol=2e-3)


def _run_local(out: Path, model_dir: Path, videos: Path) -> Path:
    run_job(prepare_job(_cfg(model_dir, out), plan_parts([str(videos)], 3)), progress=False)
    return out


def test_a_failed_part_leaves_the_decode_stream_in_step(tmp_path, model_dir, videos):
    """The local engine decodes ahead across part boundaries; when encoding fails on the first of part 1's chunks,
    its other queued decodes are dropped, parts 0 and 2 still come out exactly as a clean run's, and a rerun redoes
    part 1."""

    def job_at(out: Path):  # noqa: ANN202 - one clip per chunk, so part 1 has queued decodes when it fails
        cfg = EmbedConfig(model=str(model_dir), out=str(out), batch_size=1, precision="fp32", threads=1)
        return prepare_job(cfg, plan_parts([str(videos)], 3))

    run_job(job_at(tmp_path / "clean"), progress=False)
    clean = _embeddings(tmp_path / "clean")
    job = job_at(tmp_path / "flaky")
    real = job.encoder()
    calls = {"n": 0}

    def flaky(clips):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 3:  # part 0 (broken.mp4, clip0, clip1) encodes 2 chunks; the 3rd call is part 1's first
            raise RuntimeError("encoder failed")
        return real(clips)

    job._encoder = flaky
    s = run_job(job, progress=False)
    assert s.ran == [0, 2] and list(s.failed) == [1] and "encoder failed" in s.failed[1]
    got = _embeddings(tmp_path / "flaky")
    assert sorted(got) == [0, 2] and all(np.array_equal(clean[p], got[p]) for p in (0, 2))
    job._encoder = real
    assert run_job(job, progress=False).ran == [1]
    assert np.array_equal(_embeddings(tmp_path / "flaky")[1], clean[1])


def test_a_part_abandoned_early_does_not_empty_the_next(monkeypatch):
    """A part whose consumer stops after its first chunk, with samples not yet queued: those are never decoded, and
    the next part still yields all of its own rows (it once got none, and was written empty and marked done)."""
    import clipvip.embedjob.decode as decode
    from clipvip.embedjob.inputs import Sample

    decoded: list[str] = []

    def fake_decode(sample, settings, timeout):  # noqa: ANN001, ANN202
        decoded.append(sample.key)
        return [np.zeros((1, 3, 2, 2), np.uint8)], [{"key": sample.key}]

    monkeypatch.setattr(decode, "iter_samples", lambda src: [Sample(f"{src}-{i}", f"/{src}/{i}") for i in range(20)])
    monkeypatch.setattr(decode, "decode_sample", fake_decode)
    decoders = decode.ThreadDecoders(1)
    try:
        stream = decode.DecodeStream([(0, "a"), (1, "b")], {}, 2, 1.0, decoders)  # 2 chunks of 2 queued ahead
        next(stream.chunks(0))  # part 0's consumer fails after its first chunk
        chunks = list(stream.chunks(1))
    finally:
        decoders.close()
    assert [r["key"] for c in chunks for r in c.rows] == [f"b-{i}" for i in range(20)]
    assert chunks[-1].last and sum(c.clips.shape[0] for c in chunks) == 20
    assert len([k for k in decoded if k.startswith("a-")]) <= 6  # part 0's rest is skipped, not decoded


def test_a_part_that_cannot_be_listed_fails_alone(monkeypatch):
    """Part b's input cannot be read (an unreadable shard) while part a is still being encoded: b raises its own
    error, a and c yield every row (the error once surfaced in a, and c then came out empty and was marked done)."""
    import clipvip.embedjob.decode as decode
    from clipvip.embedjob.inputs import Sample

    def listing(src):  # noqa: ANN001, ANN202
        for i in range(5):
            if src == "b" and i == 2:
                raise OSError("b.tar: unexpected end of data")
            yield Sample(f"{src}-{i}", f"/{src}/{i}")

    monkeypatch.setattr(decode, "iter_samples", listing)
    monkeypatch.setattr(
        decode, "decode_sample", lambda s, st, t: ([np.zeros((1, 3, 2, 2), np.uint8)], [{"key": s.key}])
    )
    decoders = decode.ThreadDecoders(2)
    try:
        stream = decode.DecodeStream([(0, "a"), (1, "b"), (2, "c")], {}, 2, 1.0, decoders)  # 3 chunks ahead
        got = {0: [r["key"] for c in stream.chunks(0) for r in c.rows]}
        with pytest.raises(OSError, match="b.tar"):
            list(stream.chunks(1))
        got[2] = [r["key"] for c in stream.chunks(2) for r in c.rows]
    finally:
        decoders.close()
    assert got == {0: [f"a-{i}" for i in range(5)], 2: [f"c-{i}" for i in range(5)]}


def test_pinned_decoders_equal_unpinned(tmp_path, model_dir, videos):
    """``decode_cpus`` only moves the decode threads (the scale benchmark gives each stage its own core): same output."""
    cpu = (min(os.sched_getaffinity(0)),)
    pinned = tmp_path / "pinned"
    run_job(prepare_job(_cfg(model_dir, pinned, decode_cpus=cpu), plan_parts([str(videos)], 3)), progress=False)
    plain = _embeddings(_run_local(tmp_path / "plain", model_dir, videos))
    got = _embeddings(pinned)
    assert sorted(got) == sorted(plain) and all(np.array_equal(plain[p], got[p]) for p in plain)
    assert os.sched_getaffinity(0) != set(cpu) or len(os.sched_getaffinity(0)) == 1  # this thread was not pinned


def _rank_worker(rank: int, world: int, port: int, job) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1"})
    os.environ["MASTER_PORT"] = str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    summary = run_job(job, progress=False)  # the slice comes from RANK / WORLD_SIZE
    assert summary.ran == list(range(rank, job.num_parts, world))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path, model_dir, videos):
    local = _embeddings(_run_local(tmp_path / "local", model_dir, videos))
    job = prepare_job(_cfg(model_dir, tmp_path / "ranks"), plan_parts([str(videos)], 3))
    run_ranks(_rank_worker, 2, job)
    ranks = _embeddings(tmp_path / "ranks")
    assert sorted(ranks) == sorted(local) and all(np.array_equal(local[p], ranks[p]) for p in local)


class KillOnceEncoder(EncoderActor):
    """An encoder actor whose process dies (SIGKILL-like: no cleanup) on its first batch; the marker file makes
    the restarted actor behave."""

    def __call__(self, batch):
        marker = Path(self.job.cfg.out).parent / "killed"
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return super().__call__(batch)


def test_ray_data_equals_one_process_and_survives_a_killed_actor(tmp_path, model_dir, videos):
    ray = pytest.importorskip("ray")
    local = _embeddings(_run_local(tmp_path / "local", model_dir, videos))
    plain, killed = tmp_path / "plain" / "out", tmp_path / "killed" / "out"
    # Ray's workers import this file's KillOnceEncoder: put tests/ (and src/) on their path.
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        s1 = run_embed_ray(prepare_job(_cfg(model_dir, plain), plan_parts([str(videos)], 3)), progress=False)
        s2 = run_embed_ray(
            prepare_job(_cfg(model_dir, killed), plan_parts([str(videos)], 3)),
            encoder_cls=KillOnceEncoder,
            progress=False,
        )
    finally:
        ray.shutdown()
    assert (tmp_path / "killed" / "killed").exists()  # the actor really died once
    for s, out in ((s1, plain), (s2, killed)):
        assert not s.failed and sorted(s.ran) == [0, 1, 2] and s.total("failed") == 1
        got = _embeddings(out)
        assert sorted(got) == sorted(local) and all(np.array_equal(local[p], got[p]) for p in local)
        assert [r["path"] for r in _read_like_embedding_reader(out)[1]] == [
            r["path"] for r in _read_like_embedding_reader(tmp_path / "local")[1]
        ]
