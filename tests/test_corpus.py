"""``clipvip corpus``: subtitle quirks, the clip rule, frame-exact cutting, embedded subtitles, HD-VILA spans, and
end to end: corpus -> caption (tiny captioner) -> 2 OCL training steps reading the shards."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from clipvip.corpus import (
    ClipRule,
    ClipStats,
    CorpusConfig,
    CorpusJob,
    Cue,
    CutOptions,
    SubtitleError,
    VideoCutter,
    find_sidecars,
    make_clips,
    parse_subtitles,
    read_embedded,
    read_hdvila_metadata,
    read_subtitle_file,
    video_tasks,
)
from clipvip.data.shards import iter_shard_samples
from clipvip.video import write_video
from clipvip.video.transcode import output_size
from clipvip_apps.cli import main as cli_main

FPS = 10
BITS = 10  # each frame shows its index as 10 black/white blocks, so a decoded clip says which frames it holds


def _coded_video(path: Path, seconds: float, gop: int = 5, bframes: int = 2) -> Path:
    n = int(seconds * FPS)
    frames = np.zeros((n, 48, 8 * BITS, 3), dtype=np.uint8)
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, :, 8 * b : 8 * (b + 1)] = 255
    opts = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0"}
    return write_video(path, frames, fps=FPS, options=opts)


def _index(img: np.ndarray) -> int:
    w = img.shape[1] / BITS
    return sum(1 << b for b in range(BITS) if img[:, int(b * w) + 2 : int((b + 1) * w) - 2].mean() > 127)


def _decode(data: bytes) -> tuple[list[int], float, tuple[int, int]]:
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = float(c.streams.video[0].average_rate)
    return [_index(f) for f in frames], rate, frames[0].shape[:2]


# --------------------------------------------------------------------------------------------- parsing quirks


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_srt_bom_crlf_tags(tmp_path: Path) -> None:
    srt = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> <b>there</b>,\r\n{\\an8}friend &amp; co.\r\n\r\n"
        '2\r\n00:00:03,000 --> 00:00:04,000\r\n<font color="#ff0000">Second</font> line.\r\n'
    )
    cues = read_subtitle_file(_write(tmp_path, "a.srt", srt.encode("utf-8")))
    assert cues == [Cue(1.0, 2.5, "Hello there, friend & co."), Cue(3.0, 4.0, "Second line.")]


def test_vtt_header_notes_styles_settings_and_voice_tags(tmp_path: Path) -> None:
    vtt = (
        "WEBVTT - a title\nKind: captions\n\nSTYLE\n::cue { color: red }\n\nNOTE a note\nthat spans lines\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start position:10%\n<v Roger>Hi <c.yellow>you</c>.\n\n"
        "00:00:02.500 --> 00:00:03.000\nOne<00:00:02.700><c> two</c>\n"
    )
    cues = read_subtitle_file(_write(tmp_path, "a.vtt", vtt.encode()))
    assert cues == [Cue(1.0, 2.0, "Hi you."), Cue(2.5, 3.0, "One two")]


def test_missing_blank_lines_and_hours_over_99(tmp_path: Path) -> None:
    srt = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:02,000 --> 00:00:03,000\nsecond\n3\n123:04:05.5 --> 123:04:06,25\nthird\n"
    cues = read_subtitle_file(_write(tmp_path, "b.srt", srt.encode()))
    assert [c.text for c in cues] == ["first", "second", "third"]
    assert cues[2].start == pytest.approx(123 * 3600 + 4 * 60 + 5.5) and cues[2].end == pytest.approx(443046.25)


def test_overlapping_and_rolling_cues(tmp_path: Path) -> None:
    # out of order + overlapping, and YouTube's roll-up style where each cue repeats the previous line
    srt = (
        "2\n00:00:03,000 --> 00:00:06,000\nworld is big\nand round\n\n"
        "1\n00:00:01,000 --> 00:00:04,000\nhello\nworld is big\n\n"
        "3\n00:00:05,000 --> 00:00:05,500\nand round\n\n"
        "4\n00:00:05,400 --> 00:00:07,000\nand round\n"
    )
    cues = parse_subtitles(srt, "roll.srt")
    assert [(c.start, c.text) for c in cues] == [(1.0, "hello world is big"), (3.0, "and round")]
    assert cues[-1].end == 7.0  # "and round" stays on screen until 7 s: its repeats extend it


def test_latin1_file(tmp_path: Path) -> None:
    data = "1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9 cr\xe8me\n".encode("latin-1")
    assert read_subtitle_file(_write(tmp_path, "c.srt", data))[0].text == "café crème"


@pytest.mark.parametrize(
    "text, why",
    [
        ("1\n00:00:01,000 --> 00:0x:02,000\nbad\n", "cannot read the timing line"),
        ("1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", "ends"),
        ("just some text\nwithout any timing\n", "no subtitle cues"),
        ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:61,000 --> 00:01:02,000\nbad seconds\n", "bad timestamp"),
    ],
)
def test_malformed_files_are_named(tmp_path: Path, text: str, why: str) -> None:
    p = _write(tmp_path, "bad.srt", text.encode())
    with pytest.raises(SubtitleError, match=why) as e:
        read_subtitle_file(p)
    assert str(p) in str(e.value)


def test_sidecars_found_next_to_video(tmp_path: Path) -> None:
    v = tmp_path / "talk [1].mp4"
    v.write_bytes(b"")
    for name in ("talk [1].srt", "talk [1].en.vtt", "talk [1].txt", "talk [10].srt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in find_sidecars(v)] == ["talk [1].srt", "talk [1].en.vtt"]


# ------------------------------------------------------------------------------------------------ clip rule


def test_clip_rule_merges_sentences_within_the_window() -> None:
    cues = [
        Cue(0.5, 1.5, "Hello"),  # no punctuation: the sentence goes on into the next cue
        Cue(1.6, 2.0, "there."),
        Cue(2.1, 3.0, "A red square."),  # clip 1 = 0.5-3.0 (two sentences, >= 2 s)
        Cue(3.5, 8.5, "This sentence is long enough on its own."),  # clip 2
        Cue(9.0, 16.0, "This one is too long."),  # > 6 s: dropped, never cut mid-sentence
        Cue(16.5, 18.0, "Short."),
        Cue(25.0, 26.0, "After a long gap."),  # gap > 3 s: "Short." alone is too short, dropped; so is this
    ]
    stats = ClipStats()
    clips = make_clips(cues, ClipRule(2, 6, max_gap=3), stats)
    assert [(c.start, c.end, c.text) for c in clips] == [
        (0.5, 3.0, "Hello there. A red square."),
        (3.5, 8.5, "This sentence is long enough on its own."),
    ]
    assert (stats.sentences, stats.dropped_long, stats.dropped_short) == (6, 1, 2)
    # the max side: sentences join only while the clip stays within MAX
    more = [Cue(0, 3, "s0."), Cue(3.2, 6.5, "s1."), Cue(6.6, 7.5, "s2.")]
    stats = ClipStats()  # s0+s1 would be 6.5 s > 6: s0 closes alone (3 s < 4: dropped), s1+s2 = 4.3 s
    assert [(c.start, c.end) for c in make_clips(more, ClipRule(4, 6), stats)] == [(3.2, 7.5)]
    assert stats.dropped_short == 1
    # unpunctuated ASR text: one sentence per cue; confidences are averaged
    asr = [Cue(0, 2, "uh so", 0.5), Cue(2, 4, "we begin", 1.0)]
    assert make_clips(asr, ClipRule(3, 10))[0].confidence == pytest.approx(0.75)
    with pytest.raises(ValueError, match="MIN:MAX"):
        ClipRule.parse("5-20")
    with pytest.raises(ValueError, match="0 < MIN <= MAX"):
        ClipRule.parse("20:5")


# --------------------------------------------------------------------------------------------------- cutting


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _coded_video(tmp_path_factory.mktemp("coded") / "coded.mp4", 12.0)


@pytest.mark.parametrize("start, end", [(2.0, 4.0), (0.0, 1.3), (5.5, 8.2), (10.0, 12.0)])
def test_stream_copy_is_frame_exact_when_it_starts_on_a_keyframe(coded: Path, start: float, end: float) -> None:
    with VideoCutter(coded, CutOptions("copy")) as cutter:
        clip = cutter.cut(start, end)
    ids, rate, shape = _decode(clip.data)
    assert clip.method == "copy" and shape == (48, 80) and rate == pytest.approx(FPS)
    _assert_copied(ids, start, end)
    assert abs(clip.start - start) < 1 / FPS and -1e-6 <= clip.end - end <= 2 / FPS + 1e-6


def _assert_copied(ids: list[int], start: float, end: float) -> None:
    """Every source frame from the start to the end, in order; at most 2 more (the B-frame depth of the test
    videos): a P-frame shown after the end that B-frames before it reference is kept."""
    first, stop = round(start * FPS), math.ceil(end * FPS - 1e-6)
    assert ids == list(range(first, first + len(ids))) and stop - first <= len(ids) <= stop - first + 2, ids


def test_stream_copy_snaps_back_to_the_keyframe_and_auto_reencodes_then(coded: Path) -> None:
    with VideoCutter(coded, CutOptions("copy")) as cutter:
        clip = cutter.cut(2.3, 4.0)
    ids, _, _ = _decode(clip.data)
    assert ids[0] == 20 and clip.start == pytest.approx(2.0)  # the keyframe before 2.3 s
    with VideoCutter(coded, CutOptions("auto")) as cutter:
        clip = cutter.cut(2.3, 4.0)
        assert cutter.cut(2.5, 4.0).method == "copy"  # 2.5 s is a keyframe (GOP 5 at 10 fps)
    assert clip.method == "reencode" and _decode(clip.data)[0][0] == 23


@pytest.mark.parametrize("start, end", [(2.3, 4.0), (0.0, 1.0), (7.05, 11.1), (11.0, 15.0)])
def test_reencode_at_3fps_224_is_exact_to_one_frame(coded: Path, start: float, end: float) -> None:
    with VideoCutter(coded, CutOptions("reencode", fps=3, short_side=224)) as cutter:
        clip = cutter.cut(start, end)
    ids, rate, shape = _decode(clip.data)
    assert rate == pytest.approx(3) and shape == (224, output_size(80, 48, 224)[0])
    want_end = min(end, 12.0)  # the source ends at 12 s
    assert len(ids) == math.ceil((want_end - start) * 3 - 1e-6)
    # output frame k shows the source frame on screen at start + k/3 s (sample and hold), so within one frame
    for k, i in enumerate(ids):
        assert i == math.floor((start + k / 3) * FPS + 1e-6), (k, ids)
    assert abs(clip.end - want_end) <= 1 / 3 + 1e-6


def test_cut_errors_name_the_file(tmp_path: Path, coded: Path) -> None:
    from clipvip.corpus import CutError

    bad = _write(tmp_path, "bad.mp4", b"\x00\x00\x00\x18ftypmp42 not a video" * 8)
    with pytest.raises(CutError, match="bad.mp4"):
        VideoCutter(bad)
    with VideoCutter(coded) as cutter, pytest.raises(CutError, match="starts after the end"):
        cutter.cut(30.0, 35.0)


# ------------------------------------------------------------------------------------------ embedded streams


def _mux_with_subtitles(video: Path, srt: Path, out: Path) -> Path:
    """A Matroska file with the video and the .srt as a subrip stream (stream copy, as mkvmerge would)."""
    with av.open(str(video)) as vin, av.open(str(srt)) as sin, av.open(str(out), "w") as o:
        vs = o.add_stream_from_template(vin.streams.video[0])
        ss = o.add_stream_from_template(sin.streams.subtitles[0])
        for p in vin.demux(vin.streams.video[0]):
            if p.dts is not None:
                p.stream = vs
                o.mux(p)
        for p in sin.demux(sin.streams.subtitles[0]):
            if p.dts is not None:
                p.stream = ss
                o.mux(p)
    return out


SRT = (
    "1\n00:00:00,500 --> 00:00:01,500\nHello\n\n2\n00:00:01,600 --> 00:00:03,000\nthere, a <i>red</i> square.\n\n"
    "3\n00:00:03,500 --> 00:00:08,500\nThis sentence is long enough on its own.\n\n"
    "4\n00:00:09,000 --> 00:00:16,000\nThis one is too long for the window.\n"
)


def test_embedded_subtitle_stream_matches_the_sidecar(tmp_path: Path, coded: Path) -> None:
    srt = _write(tmp_path, "subs.srt", SRT.encode())
    mkv = _mux_with_subtitles(coded, srt, tmp_path / "with_subs.mkv")
    got = read_embedded(mkv)
    want = read_subtitle_file(srt)
    assert got is not None and [c.text for c in got] == [c.text for c in want]
    assert all(abs(a.start - b.start) < 1e-3 and abs(a.end - b.end) < 1e-3 for a, b in zip(got, want))
    assert read_embedded(coded) is None  # no subtitle stream


# ------------------------------------------------------------------------------------------------ the job


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos with sidecar subtitles, one with a malformed .srt and nothing else, one broken video."""
    root = tmp_path_factory.mktemp("raw")
    for name in ("alpha", "beta"):
        _coded_video(root / f"{name}.mp4", 12.0)
        (root / f"{name}.srt").write_text(SRT)
    _coded_video(root / "gamma.mp4", 4.0)
    (root / "gamma.srt").write_text("1\n00:00:01,000 --> 00:00:0x,000\nbroken timing\n")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 8)
    (root / "broken.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:07.000\nA sentence over a broken video.\n")
    return root


def _members(tar_path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def test_corpus_caption_train_end_to_end(raw: Path, tmp_path: Path, capsys) -> None:
    from test_caption import _ved_captioner

    out = tmp_path / "corpus"
    args = ["corpus", str(raw), "--out", str(out), "--clip-seconds", "2:6", "--videos-per-shard", "2"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "4 clips" in printed and "gamma.srt" in printed and "broken.mp4" in printed

    shards = sorted(out.glob("shard-*.tar"))
    assert [s.name for s in shards] == ["shard-00000.tar", "shard-00001.tar"]  # alpha+beta, broken+gamma
    samples = _members(shards[0])
    assert len(samples) == 4 and all(set(v) == {"mp4", "json", "txt"} for v in samples.values())
    metas = [json.loads(v["json"]) for v in samples.values()]
    assert sorted(m["clip_id"] for m in metas) == ["alpha.1", "alpha.2", "beta.1", "beta.2"]
    for key, files in samples.items():
        meta = json.loads(files["json"])
        assert meta["key"] == key and files["txt"].decode() == meta["subtitle"]
        assert set(meta) >= {"source", "start", "end", "subtitle", "asr_confidence"}
        assert meta["asr_confidence"] is None and meta["subtitle_source"] == "sidecar:srt"
        ids, rate, shape = _decode(files["mp4"])  # default cut: re-encoded at 3 fps, short side 224
        assert rate == pytest.approx(3) and min(shape) == 224
        assert abs(ids[0] / FPS - meta["subtitle_start"]) <= 1 / FPS  # starts within one source frame
        assert abs(len(ids) / 3 - (meta["subtitle_end"] - meta["subtitle_start"])) <= 1 / 3  # one output frame
    parsed = [(s.key, s.clip_id, s.video_ext, s.video, s.meta, s.text) for s in iter_shard_samples(shards[0])]
    assert parsed == [  # the one parser that PretrainDataset and the captioner share reads what the builder wrote
        (k, json.loads(f["json"])["clip_id"], "mp4", f["mp4"], json.loads(f["json"]), f["txt"].decode())
        for k, f in samples.items()
    ]
    by_clip = {m["clip_id"]: m for m in metas}
    assert by_clip["alpha.1"]["subtitle"] == "Hello there, a red square."
    assert (by_clip["alpha.1"]["subtitle_start"], by_clip["alpha.1"]["subtitle_end"]) == (0.5, 3.0)

    stats = json.loads((out / "shard-00001.stats.json").read_text())
    assert stats["clips"] == 0 and {f["path"] for f in stats["failed"]} == {
        str(raw / "gamma.srt"),
        str(raw / "broken.mp4"),
    }
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(r["clip_id"] for r in manifest) == sorted(by_clip)
    assert all(r["shard"] == "shard-00000.tar" and r["cut"] == "reencode" for r in manifest)

    # a rerun skips finished shards; different options are refused with one line
    before = shards[0].stat().st_mtime_ns
    assert cli_main(args) == 0
    assert "0 built now, 2 already done" in capsys.readouterr().out and shards[0].stat().st_mtime_ns == before
    assert cli_main([*args, "--fps", "5"]) == 2
    assert "different cut" in capsys.readouterr().err
    assert cli_main(["corpus", str(raw / "alpha.mp4"), *args[2:]]) == 2
    assert "different inputs_sha256, videos" in capsys.readouterr().err

    # caption the shards as they are, then train 2 OCL steps on them
    captioner = _ved_captioner(tmp_path / "captioner")
    caps = tmp_path / "captions.jsonl"
    rc = cli_main(
        ["caption", str(out), "--captioner", str(captioner), "--out", str(caps), "--num-workers", "0",
         "--max-new-tokens", "24", "--batch-size", "2"]
    )  # fmt: skip
    assert rc == 0
    assert sorted(json.loads(x)["clip_id"] for x in caps.read_text().splitlines()) == sorted(by_clip)
    data = (
        f"{{source: '{out}/shard-*.tar', captions: '{caps}', num_frames: 4, size: 32, context_length: 16, "
        "mode: uniform}"
    )
    run = tmp_path / "run"
    train = ["train", "--config", "tiny", "--set", "stage=pretrain", "--set", f"run_dir={run}"]
    train += ["--set", f"train_data={data}", "--set", "batch_size=2", "--set", "max_steps=2"]
    assert cli_main(train) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all(math.isfinite(r["loss"]) for r in recs)


def test_copy_mode_job_and_parts_under_a_worker_slice(raw: Path, tmp_path: Path) -> None:
    from clipvip.jobs import WorkerSlice, run_job

    tasks = video_tasks([raw / "alpha.mp4", raw / "beta.mp4"])
    job = CorpusJob(tasks, CorpusConfig(str(tmp_path / "c"), ClipRule(2, 6), CutOptions("copy"), videos_per_shard=1))
    job.prepare()
    s1 = run_job(job, progress=False, slice_=WorkerSlice(1, 2))  # rank 1 of 2 builds shard 1 only
    assert s1.ran == [1] and not job.is_done(0)
    s0 = run_job(job, progress=False, slice_=WorkerSlice(0, 2))
    assert s0.ran == [0]
    for p in (0, 1):
        for files in _members(job.shard_path(p)).values():
            meta = json.loads(files["json"])
            ids, rate, _ = _decode(files["mp4"])
            assert meta["cut"] == "copy" and rate == pytest.approx(FPS)
            _assert_copied(ids, meta["subtitle_start"], meta["subtitle_end"])


def test_hdvila_metadata_spans(raw: Path, tmp_path: Path, capsys) -> None:
    meta = tmp_path / "meta_part0.jsonl"
    rows = [
        {"video_id": "alpha", "url": "https://www.youtube.com/watch?v=alpha",
         "clip": [{"clip_id": "alpha.1.mp4", "span": ["00:00:03.500", "00:00:08.500"]},
                  {"clip_id": "alpha.2.mp4", "span": ["00:00:09.000", "00:00:11.000"]}]},
        {"video_id": "not_downloaded", "clip": [{"clip_id": "x.1.mp4", "span": ["00:00:01.000", "00:00:02.000"]}]},
    ]  # fmt: skip
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [v.video_id for v in read_hdvila_metadata(meta)] == ["alpha", "not_downloaded"]
    out = tmp_path / "hd"
    assert cli_main(["corpus", "--hdvila", str(meta), "--video-root", str(raw), "--out", str(out)]) == 0
    assert "1 video(s) of the metadata are not in" in capsys.readouterr().out
    metas = sorted((json.loads(f["json"]) for f in _members(out / "shard-00000.tar").values()), key=lambda m: m["key"])
    assert [(m["clip_id"], m["subtitle_start"], m["subtitle_end"]) for m in metas] == [
        ("alpha.1", 3.5, 8.5),
        ("alpha.2", 9.0, 11.0),
    ]
    assert metas[0]["subtitle"] == "This sentence is long enough on its own."  # text from the sidecar, by span
    assert metas[1]["subtitle"] == "This one is too long for the window."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video_id": "a", "clip": [{"clip_id": "a.1", "span": ["00:00:02.000", "00:00:01.000"]}]}\n')
    assert cli_main(["corpus", "--hdvila", str(bad), "--video-root", str(raw), "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl: row 1 (a): clip a.1 ends before it starts" in capsys.readouterr().err


def test_cli_input_errors(tmp_path: Path, capsys) -> None:
    assert cli_main(["corpus", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.mp4: no such video" in capsys.readouterr().err
    assert cli_main(["corpus", "--out", str(tmp_path / "o")]) == 2
    assert "give VIDEOS" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_job_pickles_for_ray_and_resumes_without_the_transcriber(raw: Path, tmp_path: Path) -> None:
    import pickle

    job = CorpusJob(video_tasks([raw / "alpha.mp4"]), CorpusConfig(str(tmp_path / "p"), ClipRule(2, 6)))
    job._transcriber = object()  # a loaded model must not travel to the workers
    clone = pickle.loads(pickle.dumps(job))
    assert clone._transcriber is None and clone.num_parts == 1
    clone.prepare()
    stats = clone.run_part(0)
    assert stats["clips"] == 2 and job.is_done(0)  # the original sees the clone's finished shard


@pytest.mark.parametrize("mode", ["copy", "reencode"])
def test_rotation_metadata_survives_the_cut(tmp_path: Path, mode: str) -> None:
    from clipvip.video import probe

    src = write_video(tmp_path / "phone.mp4", np.zeros((20, 32, 48, 3), np.uint8), fps=10, rotation=90)
    with VideoCutter(src, CutOptions(mode, short_side=32)) as cutter:
        clip = cutter.cut(0.0, 1.5)
    (tmp_path / "clip.mp4").write_bytes(clip.data)
    assert probe(tmp_path / "clip.mp4").rotation == probe(src).rotation == 90
