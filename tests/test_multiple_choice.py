"""Readers of the published multiple-choice files (LSMDC16 MC, JSFusion's MSR-VTT MC), the jsonl format and SSv2,
on small files written here in exactly the published layouts; malformed rows are named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipvip.data.annotations import AnnotationError
from clipvip.data.multiple_choice import (
    fill_something,
    read_lsmdc_mc,
    read_mc_jsonl,
    read_msrvtt_mc,
    read_ssv2,
    ssv2_template_key,
)

STAMPS = "01.02.27.034\t01.02.29.100\t01.02.26.534\t01.02.29.600"


def test_lsmdc_mc_train_and_test_layouts(tmp_path: Path) -> None:
    # train / valid: clip id, 4 time stamps, the correct sentence, 4 distractors (no header, tabs)
    train = tmp_path / "LSMDC16_multiple_choice_train.csv"
    train.write_text(
        f"0001_American_Beauty_00.00.51.926-00.00.54.171\t{STAMPS}\tSOMEONE opens the door.\tA\tB\tC\tD\n"
        f"0001_American_Beauty_00.00.58.000-00.01.00.000\t{STAMPS}\t  He   smiles. \tE\tF\tG\tH\n"
    )
    qs = read_lsmdc_mc(train)
    assert [q.answer for q in qs] == [0, 0]
    assert qs[0].video_id == "0001_American_Beauty_00.00.51.926-00.00.54.171"
    assert qs[0].candidates == ("SOMEONE opens the door.", "A", "B", "C", "D")
    assert qs[1].candidates[0] == "He smiles."  # whitespace normalised
    assert qs[1].where == f"{train}:2"
    # public test: five sentences, then the answer index 1-5
    test = tmp_path / "LSMDC16_multiple_choice_test_randomized.csv"
    test.write_text(f"3001_21_JUMP_STREET_00.00.01.000-00.00.03.000\t{STAMPS}\tS1\tS2\tS3\tS4\tS5\t4\n")
    (q,) = read_lsmdc_mc(test)
    assert q.answer == 3 and q.candidates[q.answer] == "S4"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"clip\t{STAMPS}\tS1\tS2\tS3\tS4\tS5\t6", "answer index must be 1-5"),
        (f"clip\t{STAMPS}\tS1\tS2\tS3\tS4\tS5\tx", "answer index must be 1-5"),
        (f"clip\t{STAMPS}\tS1\tS2\tS3", "got 8"),
        ("clip 01.02 a sentence with spaces not tabs", "got 1"),
        (f"clip\t{STAMPS}\tS1\t\tS3\tS4\tS5", "empty clip id or sentence"),
    ],
)
def test_lsmdc_mc_malformed_rows_are_named_by_line(tmp_path: Path, row: str, message: str) -> None:
    f = tmp_path / "mc.csv"
    f.write_text(f"ok\t{STAMPS}\tS1\tS2\tS3\tS4\tS5\t1\n\n{row}\n")
    with pytest.raises(AnnotationError, match=rf"mc\.csv:3: .*{message}"):
        read_lsmdc_mc(f)


JSFUSION_HEADER = "key\tvid_key\tvideo_name\ta1\ta2\ta3\ta4\ta5\tanswer"


def test_msrvtt_mc_jsfusion_layout(tmp_path: Path) -> None:
    f = tmp_path / "MSR_MC_test.csv"
    f.write_text(
        JSFUSION_HEADER + "\n"
        "mc0\tmsr7960\tvideo7960\ta man is singing\ta dog runs\ta car drives\ta cat sleeps\tpeople dance\t0\n"
        "mc1\tmsr7961\tvideo7961\tx1\tx2\tx3\tx4\tx5\t4\n"
    )
    qs = read_msrvtt_mc(f)
    assert [(q.video_id, q.answer) for q in qs] == [("video7960", 0), ("video7961", 4)]
    assert qs[0].candidates[0] == "a man is singing" and qs[1].candidates[4] == "x5"
    assert qs[1].where == f"{f}:3"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("mc0\tmsr1\tv\ta\tb\tc\td\te\t5", ":2: answer must be a 0-based index 0-4"),
        ("mc0\tmsr1\tv\ta\tb\tc\td\te\t0\nmc1\tmsr2\tv\ta\tb\tc", ":3: expected 9 tab-separated columns"),
        ("mc0\tmsr1\tv\ta\tb\tc\td\te\t0\textra", ":2: expected 9 tab-separated columns"),
    ],
)
def test_msrvtt_mc_malformed_rows(tmp_path: Path, rows: str, message: str) -> None:
    f = tmp_path / "MSR_MC_test.csv"
    f.write_text(JSFUSION_HEADER + "\n" + rows + "\n")
    with pytest.raises(AnnotationError, match=message):
        read_msrvtt_mc(f)


def test_msrvtt_mc_needs_the_header(tmp_path: Path) -> None:
    f = tmp_path / "MSR_MC_test.csv"
    f.write_text("mc0\tmsr1\tv\ta\tb\tc\td\te\t0\n")
    with pytest.raises(AnnotationError, match=r"MSR_MC_test\.csv:1: header lacks"):
        read_msrvtt_mc(f)


def test_mc_jsonl_and_its_errors(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"video": "a.mp4", "candidates": ["x", "y"], "answer": 1}) + "\n\n")
    (q,) = read_mc_jsonl(f)
    assert q.video_id == "a.mp4" and q.answer == 1
    f.write_text(
        json.dumps({"video": "a.mp4", "candidates": ["x", "y"], "answer": 1})
        + "\n\n"
        + json.dumps({"video": "b.mp4", "candidates": ["x", "y"], "answer": 2})
        + "\n"
    )
    with pytest.raises(AnnotationError, match=r"q\.jsonl:3: answer 2 is not an index"):
        read_mc_jsonl(f)
    f.write_text('{"video": "a.mp4"\n')
    with pytest.raises(AnnotationError, match=r"q\.jsonl:1: not valid JSON"):
        read_mc_jsonl(f)


def test_ssv2_annotations_and_slot_filling(tmp_path: Path) -> None:
    classes = ["Putting something on something", "Closing something", "Poking a hole into something soft"]
    f = tmp_path / "validation.json"
    f.write_text(
        json.dumps(
            [
                {
                    "id": "74225",
                    "label": "putting a cup on the table",
                    "template": "Putting [something] on [something]",
                    "placeholders": ["a cup", "the table"],
                },
                {"id": "1", "label": "closing a box", "template": "Closing [something]", "placeholders": ["a box"]},
            ]
        )  # fmt: skip
    )
    vids = read_ssv2(f, classes)
    assert [(v.video_id, v.label) for v in vids] == [("74225", 0), ("1", 1)]
    assert fill_something(classes[0], vids[0].placeholders) == "Putting a cup on the table"
    assert fill_something(classes[1], vids[0].placeholders) == "Closing a cup"
    assert fill_something(classes[0], ["a box"]) == "Putting a box on something"  # more slots than objects
    assert ssv2_template_key("Poking a hole into [something soft]") == classes[2]
    f.write_text(json.dumps([{"id": "2", "template": "Juggling [something]"}]))
    with pytest.raises(AnnotationError, match="entry 0: template 'Juggling something' is not in the label file"):
        read_ssv2(f, classes)


def test_ssv2_real_label_file_holds_every_annotation_template(shared_fixtures: Path) -> None:
    """The label file's keys are the annotation templates without brackets (174 classes, contiguous indices)."""
    from clipvip.eval import read_labels

    classes = read_labels(shared_fixtures / "labels" / "something-something-v2-labels.json")
    assert len(classes) == 174 and classes[5] == "Closing something"
    assert ssv2_template_key("Closing [something]") in classes
    assert ssv2_template_key("Poking a hole into [some substance]") in classes
    assert sum("something" in c for c in classes) >= 170  # nearly every text has a slot to fill


def test_kinetics_label_map_with_spaces_round_trips(shared_fixtures: Path, tmp_path: Path) -> None:
    """Kinetics names contain spaces ('flipping pancake'): a '<path> <name>' list still parses, with or without
    a tab, and 'flipping_pancake' (folder style) names the same class."""
    from clipvip.eval import read_labels
    from clipvip_apps.commands.zeroshot import read_video_list

    classes = read_labels(shared_fixtures / "labels" / "kinetics400_label_map.txt")
    k = classes.index("flipping pancake")
    lst = tmp_path / "list.txt"
    lst.write_text("my videos/a.mp4 flipping pancake\nb.mkv\tflipping pancake\nflipping_pancake/c.webm\n")
    paths, labels = read_video_list(lst, classes, tmp_path)
    assert labels == [k, k, k]
    assert paths[0] == str(tmp_path / "my videos" / "a.mp4")
