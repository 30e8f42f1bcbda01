"""Bad-input sweeps kept as tests (hypothesis): annotation parsers, manifest readers, ``--set`` values, the
tokenizer and the retrieval metrics. Each property is checked on a bounded number of generated inputs (the file
runs in seconds); a failure prints the smallest input that breaks it."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipvip.captioning import ManifestOptions, iter_manifest
from clipvip.data import Sample, load_annotations
from clipvip.data.annotations import video_path
from clipvip.data.datasets import load_captions
from clipvip.eval.metrics import retrieval_ranks
from clipvip.tokenizer import EOT_ID, SOT_ID, get_tokenizer
from clipvip_apps.train.config import apply_overrides, parse_override, parse_value

SWEEP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a user's file may hold: any code point (lone surrogates included: json.loads accepts "\ud800").
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
words = st.text(st.characters(categories=("L", "N", "P", "Zs")), min_size=1, max_size=30).filter(str.strip)
ids = st.from_regex(r"[A-Za-z0-9_@\-]{1,12}", fullmatch=True)


def _norm(t: str) -> str:
    return " ".join(t.split())


def _write(suffix: str, content: str | bytes) -> Path:
    d = Path(tempfile.mkdtemp(prefix="clipvip-prop-"))
    p = d / f"ann{suffix}"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return p


def _loads_or_rejects(path: Path, fmt: str, **kw) -> list | None:
    """Parse; the only acceptable failure is ValueError (AnnotationError, a bad encoding) naming the file."""
    try:
        return load_annotations(path, fmt, **kw)
    except ValueError as e:
        assert str(path) in str(e) or isinstance(e, UnicodeDecodeError), e
        return None


# ------------------------------------------------------------------------------------------- annotation parsers

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@SWEEP
@given(value=json_values, fmt=st.sampled_from(["jsonl", "msrvtt", "didemo", "activitynet", "msvd"]))
def test_any_json_file_is_parsed_or_rejected_with_one_error(value, fmt) -> None:
    samples = _loads_or_rejects(_write(".json", json.dumps(value)), fmt)
    if samples is not None:
        assert len({s.video_id for s in samples}) == len(samples)
        assert all(s.texts and all(isinstance(t, str) and t and t == _norm(t) for t in s.texts) for s in samples)


@SWEEP
@given(content=any_text, fmt=st.sampled_from(["jsonl", "msrvtt", "lsmdc"]))
def test_any_text_file_is_parsed_or_rejected_with_one_error(content, fmt) -> None:
    suffix = {"jsonl": ".jsonl", "msrvtt": ".csv", "lsmdc": ".csv"}[fmt]
    samples = _loads_or_rejects(_write(suffix, content), fmt)
    if samples is not None:
        assert len({s.video_id for s in samples}) == len(samples)


@SWEEP
@given(rows=st.lists(st.tuples(ids, st.sampled_from(["mp4", "mov", "avi", "3g2", ""]), words), max_size=25))
def test_didemo_one_sample_per_video_with_every_description(rows) -> None:
    data = [{"video": f"{v}.{ext}", "description": d, "times": [[0, 0]]} for v, ext, d in rows]
    samples = _loads_or_rejects(_write(".json", json.dumps(data)), "didemo")
    if not rows or any(not _norm(d) for _, _, d in rows):
        return
    assert samples is not None
    expected: dict[str, list[str]] = {}
    for v, _, d in rows:
        expected.setdefault(v, []).append(_norm(d))
    assert [(s.video_id, s.texts) for s in samples] == [(v, [" ".join(ds)]) for v, ds in expected.items()]
    assert all(s.file.rpartition(".")[0] == s.video_id for s in samples)


@SWEEP
@given(pairs=st.lists(st.tuples(ids, st.lists(words, min_size=1, max_size=3)), min_size=1, max_size=15))
def test_jsonl_msrvtt_csv_lsmdc_keep_every_text_under_its_id(pairs) -> None:
    expected: dict[str, list[str]] = {}
    for v, texts in pairs:
        expected.setdefault(v, []).extend(_norm(t) for t in texts)
    jsonl = "".join(json.dumps({"clip_id": v, "text": texts}) + "\n" for v, texts in pairs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["key", "vid_key", "video_id", "sentence"])
    w.writerows([f"k{i}", v, v, t] for i, (v, texts) in enumerate(pairs) for t in texts)
    tsv = "".join(f"{v}\t0\t1\t0\t1\t{_norm(t)}\n" for v, texts in pairs for t in texts)
    for fmt, path in (
        ("jsonl", _write(".jsonl", jsonl)),
        ("msrvtt", _write(".csv", buf.getvalue())),
        ("lsmdc", _write(".csv", tsv)),
    ):
        got = load_annotations(path, fmt)
        assert {s.video_id: s.texts for s in got} == expected, fmt


@SWEEP
@given(data=st.dictionaries(ids, st.lists(words, min_size=1, max_size=3), min_size=1, max_size=10), data_=st.data())
def test_msvd_and_activitynet_follow_the_split_and_join_paragraphs(data, data_) -> None:
    split = data_.draw(st.lists(st.sampled_from(sorted(data)), unique=True, min_size=1))
    listing = _write(".txt", "\n".join(split) + "\n")
    msvd = load_annotations(_write(".json", json.dumps(data)), "msvd", split_list=listing)
    assert [(s.video_id, s.texts) for s in msvd] == [(v, [_norm(t) for t in data[v]]) for v in split]
    anet = {f"v_{k}": {"duration": 1.0, "sentences": [f"  {t} " for t in v]} for k, v in data.items()}
    got = load_annotations(_write(".json", json.dumps(anet)), "activitynet")
    assert [(s.video_id, s.texts) for s in got] == [(k, [_norm(" ".join(e["sentences"]))]) for k, e in anet.items()]


# --------------------------------------------------------------------------------------------- manifest readers

# Path templates as users type them, good and bad: str.format fields, positional and attribute fields, lone braces.
templates = st.lists(
    st.sampled_from(
        ["{root}", "{clip_id}", "{video_id}", "{file}", "{0}", "{}", "{root.x}", "{", "}", "/", ".mp4", "x"]
    )
    | any_text,
    max_size=5,
).map("".join)


@SWEEP
@given(lines=st.lists(json_values.map(json.dumps) | any_text, max_size=6), template=st.none() | templates)
def test_any_manifest_yields_clips_or_one_error(lines, template) -> None:
    path = _write(".jsonl", "\n".join(lines) + "\n")
    try:
        got = list(iter_manifest(path, ManifestOptions(video_template=template)))
    except ValueError as e:
        assert str(path) in str(e) or repr(template) in str(e) or isinstance(e, UnicodeDecodeError), e
    else:
        assert all(isinstance(c, str) and c and isinstance(v, str) for c, v in got)
    try:
        caps = load_captions(path)
    except ValueError as e:
        assert str(path) in str(e) or isinstance(e, UnicodeDecodeError), e
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in caps.items())


@SWEEP
@given(template=templates, vid=ids)
def test_any_video_path_template_gives_a_path_or_one_error(template, vid) -> None:
    try:
        got = video_path(Sample(vid, ["t"], file=f"{vid}.mp4"), template, "/root")
    except ValueError as e:
        assert repr(template) in str(e)
    else:
        assert isinstance(got, str)


@SWEEP
@given(rows=st.lists(st.tuples(ids, ids), min_size=1, max_size=8))
def test_manifest_rows_become_paths_under_the_root(rows) -> None:
    path = _write(".jsonl", "".join(json.dumps({"clip_id": c, "video": f"{v}.mp4"}) + "\n" for c, v in rows))
    got = list(iter_manifest(path, ManifestOptions(video_root="/data")))
    assert got == [(c, f"/data/{v}.mp4") for c, v in rows]
    tpl = list(iter_manifest(path, ManifestOptions(video_root="/r", video_template="{root}/x/{clip_id}.mkv")))
    assert tpl == [(c, f"/r/x/{c}.mkv") for c, _ in rows]


# -------------------------------------------------------------------------------------------------- --set values

scalars = st.integers(-(10**12), 10**12) | st.booleans() | st.none() | st.floats(allow_nan=False, allow_infinity=False)


@SWEEP
@given(value=scalars | st.lists(st.integers(-1000, 1000), max_size=4))
def test_set_yaml_values_round_trip(value) -> None:
    raw = json.dumps(value)  # JSON is YAML (the subset --set users type)
    got = parse_value(raw)
    if isinstance(value, float):  # YAML 1.1 reads 1e-05 (no dot) as text; the config coerces numeric fields
        assert float(got) == value
    else:
        assert got == value and type(got) is type(value)


@SWEEP
@given(prefix=any_text, field=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), suffix=any_text)
def test_set_keeps_templates_and_unparsable_text_verbatim(prefix, field, suffix) -> None:
    raw = f"{prefix}{{{field}}}{suffix}"
    assert parse_value(raw) == raw.strip()
    key, value = parse_override(f"train_data.template={raw}")
    assert key == "train_data.template" and value == raw.strip()
    assert apply_overrides({"train_data": {"fmt": "didemo"}}, [f"train_data.template={raw}"]) == {
        "train_data": {"fmt": "didemo", "template": raw.strip()}
    }


@SWEEP
@given(raw=any_text)
def test_set_never_fails_on_a_value(raw) -> None:
    value = parse_value(raw)
    if isinstance(value, str):  # text is kept as typed, except that YAML quotes are removed
        assert value == raw.strip() or raw.strip()[:1] in "'\""
    else:
        assert value is None or isinstance(value, (bool, int, float, list, dict))
    assert parse_override(f"k={raw}=x")[0] == "k"  # split at the first '='


def test_set_examples() -> None:
    cases = {
        "{root}/{video_id}.mp4": "{root}/{video_id}.mp4",
        "shards/{00000..00099}.tar": "shards/{00000..00099}.tar",
        "{a,b}": "{a,b}",
        "{a: 1}": {"a": 1},
        "{}": {},
        "a: b": "a: b",
        "12:30": "12:30",
        "[0.9, 0.98]": [0.9, 0.98],
        "'quoted: yes'": "quoted: yes",
        "runs/x # not a comment": "runs/x # not a comment",
        "": "",
    }
    assert {raw: parse_value(raw) for raw in cases} == cases


def test_set_rejects_what_has_no_key() -> None:
    for bad in ("novalue", "=3", "a..b=1", ".a=1"):
        with pytest.raises(ValueError, match="--set"):
            parse_override(bad)


# ------------------------------------------------------------------------------------------------------ tokenizer

clip_words = st.from_regex(r"[a-z]{1,10}|[0-9]|[!?.,;:]{1,3}", fullmatch=True)


@SWEEP
@given(tokens=st.lists(clip_words, min_size=1, max_size=20))
def test_tokenizer_round_trips_normalised_text(tokens) -> None:
    tok = get_tokenizer()
    text = " ".join(tokens)  # normalised: lower case, one space between CLIP words
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text.upper().replace(" ", "  \t"))) == text


# ftfy (CLIP's own cleaning) repairs mojibake, and a repaired string can look like mojibake again ("\x9cÀ" -> "œà"
# -> "ψ"), so idempotence is claimed for text without the Latin-1 / cp1252 characters mojibake is made of.
no_mojibake = st.text(
    st.characters(codec=None, exclude_categories=("Cs",)).filter(
        lambda c: ord(c) < 0x80 or 0x370 <= ord(c) < 0x2000 or 0x3000 <= ord(c) < 0xA000
    ),
    max_size=40,
)


@SWEEP
@given(text=no_mojibake)
def test_tokenizer_is_idempotent(text) -> None:
    tok = get_tokenizer()
    once = tok.decode(tok.encode(text))
    assert tok.decode(tok.encode(once)) == once


@SWEEP
@given(text=any_text | st.lists(clip_words, max_size=60).map(" ".join), length=st.integers(2, 80))
def test_truncation_keeps_sot_and_eot(text, length) -> None:
    tok = get_tokenizer()
    body = tok.encode(text)
    row = tok([text], context_length=length)[0].tolist()
    n = min(len(body) + 2, length)
    assert row[0] == SOT_ID and row[n - 1] == EOT_ID and row.count(EOT_ID) == 1
    assert row[1 : n - 1] == body[: n - 2] and row[n:] == [0] * (length - n)


# -------------------------------------------------------------------------------------------- retrieval metrics


def _reference_ranks(sim: np.ndarray, positives: list[list[int]], ties: str) -> np.ndarray:
    """Brute force from the module docstring: best correct item; ties broken as documented."""
    out = []
    for q, pos in enumerate(positives):
        row = sim[q]
        best = max(row[p] for p in pos)
        higher = sum(1 for j, s in enumerate(row) if s > best)
        tied_wrong = sum(1 for j, s in enumerate(row) if s == best and j not in pos)
        tied_correct = sum(1 for p in pos if row[p] == best)
        extra = {"optimistic": 0.0, "pessimistic": tied_wrong, "mean": tied_wrong / (tied_correct + 1)}[ties]
        out.append(1.0 + higher + extra)
    return np.asarray(out)


@st.composite
def similarity(draw) -> tuple[np.ndarray, list[list[int]]]:
    q, n = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    levels = draw(st.integers(1, 4))  # few distinct scores: ties are frequent
    sim = np.asarray(draw(st.lists(st.integers(0, levels), min_size=q * n, max_size=q * n)), np.float32) / 4
    positives = [sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))) for _ in range(q)]
    return sim.reshape(q, n), positives


@SWEEP
@given(case=similarity(), ties=st.sampled_from(["optimistic", "pessimistic", "mean"]), data=st.data())
def test_ranks_match_brute_force_and_ignore_row_and_column_order(case, ties, data) -> None:
    sim, positives = case
    ranks = retrieval_ranks(sim, positives=positives, ties=ties)
    np.testing.assert_allclose(ranks, _reference_ranks(sim, positives, ties))
    rperm = np.asarray(data.draw(st.permutations(range(sim.shape[0]))))
    cperm = np.asarray(data.draw(st.permutations(range(sim.shape[1]))))
    new_col = np.argsort(cperm)  # column j of ``sim`` is column new_col[j] of the permuted matrix
    shuffled = sim[rperm][:, cperm]
    moved = [[int(new_col[p]) for p in positives[r]] for r in rperm]
    np.testing.assert_allclose(retrieval_ranks(shuffled, positives=moved, ties=ties), ranks[rperm])
    # a transposed view takes the item-major path: same ranks
    np.testing.assert_allclose(retrieval_ranks(np.ascontiguousarray(sim.T).T, positives=positives, ties=ties), ranks)
    lo, hi = 1.0, float(sim.shape[1])
    assert ((ranks >= lo) & (ranks <= hi)).all() and all(math.isfinite(r) for r in ranks)
