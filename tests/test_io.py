"""clipvip.io: atomic writes leave the old file or the new one, never a torn one or a stray temporary."""

import json
import threading

import numpy as np
import pytest

from clipvip.io import (
    JsonlError,
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    read_jsonl,
    read_jsonl_numbered,
    write_jsonl,
)


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_concurrent_writers_of_one_target_do_not_share_a_temporary(tmp_path):
    target = tmp_path / "x.npy"
    errors: list[BaseException] = []

    def write(v: float) -> None:
        try:
            for _ in range(20):
                atomic_save_npy(target, np.full(1000, v, dtype=np.float32))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(float(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    arr = np.load(target)
    assert arr.shape == (1000,) and len(set(arr.tolist())) == 1  # one writer's whole array
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_npy_dtype(tmp_path):
    atomic_save_npy(tmp_path / "h.npy", np.ones((2, 3)), dtype=np.float16)
    assert np.load(tmp_path / "h.npy").dtype == np.float16


def test_jsonl_round_trip_and_errors(tmp_path):
    p = tmp_path / "r.jsonl"
    rows = [{"a": 1, "t": "ü"}, {"a": 2}]
    write_jsonl(p, rows)
    assert list(read_jsonl(p)) == rows
    p.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(JsonlError, match=r"r\.jsonl:3: expected a JSON object"):
        list(read_jsonl(p))
    p.write_text('{"a": 1}\n{"a": 2, "b"')
    with pytest.raises(JsonlError, match=r"r\.jsonl:2: not valid JSON"):
        list(read_jsonl(p))
    assert list(read_jsonl(p, skip_torn_tail=True)) == [{"a": 1}]


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    """The numbers are the file's lines (what an editor shows), blank lines included, as in the error messages."""
    p = tmp_path / "n.jsonl"
    p.write_text('{"a": 1}\n\n  \n{"a": 2}\n{"a": 3}')
    assert list(read_jsonl_numbered(p)) == [(1, {"a": 1}), (4, {"a": 2}), (5, {"a": 3})]
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a"')
    assert list(read_jsonl_numbered(p, skip_torn_tail=True)) == [(1, {"a": 1}), (3, {"a": 2})]
    with pytest.raises(JsonlError, match=r"n\.jsonl:4: not valid JSON"):
        list(read_jsonl_numbered(p))


def test_keep_suffix_for_writers_that_pick_the_format_from_the_name(tmp_path):
    from PIL import Image

    target = tmp_path / "frame.png"
    with atomic_path(target, keep_suffix=True) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        Image.new("RGB", (4, 4)).save(tmp)  # PIL chooses PNG from the suffix
    assert Image.open(target).format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.png"]
