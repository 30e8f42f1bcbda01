"""``clipvip caption``: tiny random captioners built here, run end to end on generated videos."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clipvip.captioning import (
    Captioner,
    CaptionerConfig,
    CaptionInput,
    CaptionJobConfig,
    FrameStream,
    ManifestOptions,
    failed_path,
    iter_manifest,
    iter_shard_samples,
    merge_parts,
    owner_rank,
    parts_dir,
    repair_jsonl,
    run_captioning,
    truncate_words,
)
from clipvip.data import load_captions as read_captions  # the OCL data set's reader of our output
from clipvip.video import read_middle_frame, write_video
from clipvip_apps.cli import main as cli_main

WORDS = [f"w{i}" for i in range(40)]
N_CLIPS = 7


def _ved_captioner(folder: Path) -> Path:
    """VisionEncoderDecoder (tiny ViT + tiny GPT-2) with a word-level tokenizer built here and a ViT processor.

    ``min_new_tokens`` 20 and suppressed special tokens force > 16 words so the 16-word cap is exercised."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    vocab = {t: i for i, t in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )
    enc = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    dec = GPT2Config(
        vocab_size=len(vocab),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=64,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=cfg)
    with torch.no_grad():  # a strong cross-attention path: the random caption then depends on the image
        for p in model.decoder.transformer.h[0].crossattention.parameters():
            p.normal_(0, 0.5)
    gc = model.generation_config
    gc.decoder_start_token_id, gc.pad_token_id, gc.eos_token_id = 1, 0, 2
    gc.min_new_tokens, gc.suppress_tokens = 20, [0, 1, 3]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ved_captioner(tmp_path_factory.mktemp("ved"))


@pytest.fixture(scope="module")
def captioner(captioner_dir: Path) -> Captioner:
    return Captioner(CaptionerConfig(path=str(captioner_dir), name="tiny-ved", max_new_tokens=24))


def _videos(root: Path, n: int = N_CLIPS, corrupt: bool = True, relative: bool = False) -> Path:
    """n small H.264 clips (random noise) + optionally a corrupt file; a jsonl manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        frames = rng.integers(0, 256, size=(8, 32, 48, 3), dtype=np.uint8)
        write_video(root / f"clip{i}.mp4", frames)
        rows.append({"clip_id": f"c{i}", "video": f"clip{i}.mp4" if relative else str(root / f"clip{i}.mp4")})
    if corrupt:
        (root / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
        rows.append({"clip_id": "bad", "video": "bad.mp4" if relative else str(root / "bad.mp4")})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_truncate_words() -> None:
    text = " ".join(f"x{i}" for i in range(30))
    assert truncate_words(text) == " ".join(f"x{i}" for i in range(16))
    assert truncate_words("  a  dog\n runs ") == "a dog runs"
    assert truncate_words("a b c", max_words=2) == "a b"


def test_captions_match_direct_generate_and_are_capped(captioner: Captioner, captioner_dir: Path, tmp_path) -> None:
    """The captioner equals transformers' own generate on the same middle frames, cut to the first 16 words."""
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    manifest = _videos(tmp_path, n=3, corrupt=False)
    frames = [read_middle_frame(p, size=32)[0] for _, p in iter_manifest(manifest)]
    model = VisionEncoderDecoderModel.from_pretrained(captioner_dir).eval()
    proc = AutoImageProcessor.from_pretrained(captioner_dir)
    tok = AutoTokenizer.from_pretrained(captioner_dir)
    pixels = proc(images=[f.permute(1, 2, 0).numpy() for f in frames], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels, max_new_tokens=24, num_beams=1, do_sample=False)
    full = [tok.decode(row, skip_special_tokens=True).split() for row in ids]
    assert all(len(words) >= 20 for words in full)  # the model really talks past the cap
    got = captioner.caption(frames)
    assert got == [" ".join(words[:16]) for words in full]
    assert len(set(got)) > 1  # captions depend on the frame
    beam = Captioner(CaptionerConfig(path=str(captioner_dir), num_beams=3, max_new_tokens=24)).caption(frames)
    assert all(len(c.split()) == 16 for c in beam)


def test_cli_captions_every_clip_once_and_lists_bad_video(captioner_dir: Path, tmp_path, capsys) -> None:
    manifest = _videos(tmp_path, relative=True)
    out = tmp_path / "captions.jsonl"
    rc = cli_main(
        [
            "caption",
            str(manifest),
            "--captioner",
            str(captioner_dir),
            "--captioner-name",
            "tiny",
            "--out",
            str(out),
            "--video-root",
            str(tmp_path),
            "--batch-size",
            "3",
            "--num-workers",
            "0",
            "--max-new-tokens",
            "24",
        ]
    )
    assert rc == 0
    recs = _lines(out)
    assert sorted(r["clip_id"] for r in recs) == [f"c{i}" for i in range(N_CLIPS)]
    assert all(set(r) == {"clip_id", "caption", "captioner"} and r["captioner"] == "tiny" for r in recs)
    assert all(len(r["caption"].split()) == 16 for r in recs)
    failed = _lines(failed_path(out))
    assert [f["clip_id"] for f in failed] == ["bad"] and "bad.mp4" in failed[0]["error"]
    assert "bad" in capsys.readouterr().out
    assert not parts_dir(out).exists()  # single process: parts folded into the output


def test_resume_after_interrupted_run(captioner: Captioner, tmp_path) -> None:
    """Run stops after 3 clips with a half-written line at the end; the rerun captions only what is missing."""
    inputs = CaptionInput.resolve([str(_videos(tmp_path))])
    out = tmp_path / "captions.jsonl"
    job = CaptionJobConfig(batch_size=2, num_workers=0, limit=3, rank=0, world_size=1, progress=False)
    first = run_captioning(inputs, out, captioner, job)
    assert first.captioned == 3 and not first.finished and first.merge is None and not out.exists()
    part = Path(first.part)
    with open(part, "a") as f:  # a kill in the middle of a write
        f.write('{"clip_id": "c9", "capt')
    job.limit = None
    second = run_captioning(inputs, out, captioner, job)
    assert second.already_done == 3 and second.captioned == N_CLIPS - 3 and second.finished
    ids = [r["clip_id"] for r in _lines(out)]
    assert sorted(ids) == [f"c{i}" for i in range(N_CLIPS)]  # each once, the partial line gone
    # The bad video was listed by the first or second run, never retried or written twice.
    assert [f["clip_id"] for f in _lines(failed_path(out))] == ["bad"]
    third = run_captioning(inputs, out, captioner, job)
    assert third.captioned == 0 and third.already_done == N_CLIPS + 1 and len(_lines(out)) == N_CLIPS


def test_repair_jsonl(tmp_path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert repair_jsonl(p) == len('{"a": ')
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'
    p.write_text('{"a": 1}\n{"a": 2}')  # complete line, newline lost: kept, newline added
    assert repair_jsonl(p) == 0 and p.read_text() == '{"a": 1}\n{"a": 2}\n'
    p.write_text('{"a": 1}\n{"a": 2\n')  # newline written, line garbage
    repair_jsonl(p)
    assert p.read_text() == '{"a": 1}\n'


def test_two_ranks_partition_and_merge(captioner: Captioner, tmp_path, monkeypatch) -> None:
    """Ranks 0 and 1 of 2 take disjoint clip sets (the stable hash) whose union is everything; merge = full set."""
    manifest = _videos(tmp_path, n=N_CLIPS, corrupt=False)
    inputs = CaptionInput.resolve([str(manifest)])
    out = tmp_path / "captions.jsonl"
    reports = [
        run_captioning(
            inputs, out, captioner, CaptionJobConfig(batch_size=4, num_workers=0, rank=0, world_size=2, progress=False)
        )
    ]
    monkeypatch.setenv("RANK", "1")  # rank 1 as torchrun launches it, decoding in 2 DataLoader workers
    monkeypatch.setenv("WORLD_SIZE", "2")
    reports.append(
        run_captioning(inputs, out, captioner, CaptionJobConfig(batch_size=4, num_workers=2, progress=False))
    )
    assert (reports[1].rank, reports[1].world_size) == (1, 2)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert reports[0].merge is None and reports[1].merge is not None  # the last rank to finish merges
    parts = [{r["clip_id"] for r in _lines(Path(rep.part))} for rep in reports]
    all_ids = {f"c{i}" for i in range(N_CLIPS)}
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == all_ids
    expected = [
        {
            c
            for c in all_ids
            if int.from_bytes(__import__("hashlib").blake2b(c.encode(), digest_size=8).digest(), "big") % 2 == r
        }
        for r in (0, 1)
    ]
    assert parts == expected and parts == [{c for c in all_ids if owner_rank(c, 2) == r} for r in (0, 1)]
    merged = _lines(out)
    assert sorted(r["clip_id"] for r in merged) == sorted(all_ids)
    single = tmp_path / "single.jsonl"  # the same clips in one process give the same captions
    run_captioning(inputs, single, captioner, CaptionJobConfig(num_workers=0, rank=0, world_size=1, progress=False))
    assert read_captions(single) == read_captions(out)


def test_slurm_array_tasks_take_their_own_slice(captioner: Captioner, tmp_path, monkeypatch) -> None:
    """Without torchrun, a Slurm array task is rank (task id - min) of the task count: its own part file and its
    own clips, not every task appending to rank 0 of 1's part."""
    manifest = _videos(tmp_path, n=N_CLIPS, corrupt=False)
    inputs = CaptionInput.resolve([str(manifest)])
    out = tmp_path / "captions.jsonl"
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    reports = []
    for task in ("4", "3"):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        reports.append(run_captioning(inputs, out, captioner, CaptionJobConfig(num_workers=0, progress=False)))
    assert [(r.rank, r.world_size) for r in reports] == [(1, 2), (0, 2)]
    assert [Path(r.part).name for r in reports] == ["part-00001-of-00002.jsonl", "part-00000-of-00002.jsonl"]
    all_ids = {f"c{i}" for i in range(N_CLIPS)}
    for r in reports:
        assert {x["clip_id"] for x in _lines(Path(r.part))} == {c for c in all_ids if owner_rank(c, 2) == r.rank}
    assert reports[1].merge is not None and sorted(r["clip_id"] for r in _lines(out)) == sorted(all_ids)


def _tar_shard(path: Path, videos: list[tuple[str, Path]], with_json: bool) -> None:
    with tarfile.open(path, "w") as tf:
        for i, (clip_id, video) in enumerate(videos):
            key = f"{i:09d}"
            members = {f"{key}.mp4": video.read_bytes(), f"{key}.txt": b"a subtitle"}
            if with_json:
                members[f"{key}.json"] = json.dumps({"key": key, "clip_id": clip_id}).encode()
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_webdataset_shards(captioner: Captioner, tmp_path) -> None:
    """video2dataset tars: clip id from the json (else the key), shards split whole between ranks."""
    _videos(tmp_path, n=4, corrupt=True)
    vids = [(f"c{i}", tmp_path / f"clip{i}.mp4") for i in range(4)]
    _tar_shard(tmp_path / "shard-00000.tar", vids[:2] + [("bad", tmp_path / "bad.mp4")], with_json=True)
    _tar_shard(tmp_path / "shard-00001.tar", vids[2:], with_json=False)
    assert [s.clip_id for s in iter_shard_samples(tmp_path / "shard-00000.tar")] == ["c0", "c1", "bad"]
    inputs = CaptionInput.resolve([str(tmp_path / "shard-{00000..00001}.tar")])
    items = {i.clip_id: i for i in FrameStream(inputs, rank=0, world_size=1, skip={"c1"}, frame_size=32)}
    assert sorted(items) == ["000000000", "000000001", "bad", "c0"]  # decoded from the member's bytes in memory:
    assert torch.equal(items["c0"].frame, read_middle_frame(tmp_path / "clip0.mp4", size=32)[0])  # same frame
    assert items["bad"].frame is None and items["bad"].source.endswith("shard-00000.tar:bad.mp4")
    assert inputs.rank_shards(0, 2) == [str(tmp_path / "shard-00000.tar")]
    out = tmp_path / "captions.jsonl"
    for rank in (1, 0):
        run_captioning(inputs, out, captioner, CaptionJobConfig(num_workers=0, rank=rank, world_size=2, progress=False))
    assert sorted(read_captions(out)) == ["000000000", "000000001", "c0", "c1"]
    assert [f["clip_id"] for f in _lines(failed_path(out))] == ["bad"]


def test_bad_inputs_name_the_file(tmp_path, captioner_dir: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"clip_id": "a", "video": "a.mp4"}\nnot json\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        list(iter_manifest(m))
    m.write_text('{"clip_id": "a", "url": "x"}\n{"video": "b.mp4"}\n')
    root = ManifestOptions(video_root=str(tmp_path))
    with pytest.raises(ValueError, match=r"m.jsonl: row 2 has no 'clip_id'"):
        list(iter_manifest(m, root))
    m.write_text('{"clip_id": "a", "url": "x"}\n')  # the data set's default: {video_root}/{clip_id}.mp4
    assert list(iter_manifest(m, root)) == [("a", f"{tmp_path}/a.mp4")]
    assert list(iter_manifest(m, ManifestOptions(video_template="/v/{url}/{clip_id}.webm"))) == [("a", "/v/x/a.webm")]
    with pytest.raises(ValueError, match="row 1 has no 'file'"):
        list(iter_manifest(m, ManifestOptions(video_key="file")))
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        CaptionInput.resolve([str(tmp_path / "nothing.jsonl")])
    rc = cli_main(["caption", str(m), "--out", str(tmp_path / "o.jsonl"), "--captioner", str(tmp_path)])
    assert rc == 2  # a folder without config.json: one clear error line


def test_parquet_manifest(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"clip_id": ["a", "b"], "path": ["/v/a.mp4", "b.mp4"]}), tmp_path / "m.parquet")
    got = list(iter_manifest(tmp_path / "m.parquet", ManifestOptions(video_root=str(tmp_path))))
    assert got == [("a", "/v/a.mp4"), ("b", f"{tmp_path}/b.mp4")]


def test_duplicate_rows_captioned_once(captioner: Captioner, tmp_path) -> None:
    manifest = _videos(tmp_path, n=2, corrupt=False)
    manifest.write_text(manifest.read_text() * 2)
    out = tmp_path / "captions.jsonl"
    rep = run_captioning(
        CaptionInput.resolve([str(manifest)]),
        out,
        captioner,
        CaptionJobConfig(num_workers=0, rank=0, world_size=1, progress=False),
    )
    assert rep.captioned == 2 and sorted(r["clip_id"] for r in _lines(out)) == ["c0", "c1"]


def test_half_precision_weights(captioner_dir: Path) -> None:
    """--dtype bf16 (the GPU default where supported) keeps the weights in bf16 and still captions."""
    cap = Captioner(CaptionerConfig(path=str(captioner_dir), dtype="bf16", device="cpu", max_new_tokens=24))
    assert next(cap.model.parameters()).dtype == torch.bfloat16
    out = cap.caption([torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)])
    assert len(out) == 1 and len(out[0].split()) == 16


def test_resume_with_a_different_world_size(captioner: Captioner, tmp_path, capsys) -> None:
    """Rank 0 of 2 finishes, rank 1 never runs; a single-process rerun captions only rank 1's clips."""
    inputs = CaptionInput.resolve([str(_videos(tmp_path, corrupt=False))])
    out = tmp_path / "captions.jsonl"
    r0 = run_captioning(inputs, out, captioner, CaptionJobConfig(num_workers=0, rank=0, world_size=2, progress=False))
    assert r0.merge is None and not out.exists()
    assert cli_main(["caption", "--merge-only", str(tmp_path / "manifest.jsonl"), "--out", str(out)]) == 0
    assert len(_lines(out)) == r0.captioned  # merge-only folds in whatever parts exist
    rest = run_captioning(inputs, out, captioner, CaptionJobConfig(num_workers=0, rank=0, world_size=1, progress=False))
    assert rest.captioned == N_CLIPS - r0.captioned
    assert sorted(r["clip_id"] for r in _lines(out)) == [f"c{i}" for i in range(N_CLIPS)]


def test_merge_tolerates_a_torn_tail_and_names_a_corrupt_line(tmp_path) -> None:
    """A part cut mid-line by a killed writer merges without its torn tail; a bad line elsewhere names file:line."""
    out = tmp_path / "c.jsonl"
    parts_dir(out).mkdir()
    part = parts_dir(out) / "part-00000-of-00001.jsonl"
    part.write_text('{"clip_id": "a", "caption": "x"}\n{"clip_id": "b", "cap')
    assert merge_parts(out).captions == 1 and read_captions(out) == {"a": "x"}
    part.write_text('{"clip_id": "a", "caption": "x"}\ngarbage\n{"clip_id": "b", "caption": "y"}\n')
    out.unlink()
    with pytest.raises(ValueError, match=r"part-00000-of-00001.jsonl:2: not valid JSON"):
        merge_parts(out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["c.jsonl.parts"]  # no stray temporary
