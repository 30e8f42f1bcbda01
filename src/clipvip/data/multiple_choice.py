"""Multiple-choice benchmark files -> ``MCQuestion`` lists, one reader per published format.

* LSMDC16 movie multiple choice (``LSMDC16_multiple_choice_{train,valid,test_randomized}.csv``), format from the
  challenge's README (LSMDC 2016, "Movie Multiple-Choice Test"; the same text ships in yj-yu/lsmdc and is quoted
  by the MC dataloaders of e.g. Frozen-in-Time / All-in-One): tab-separated, no header,
  ``clip_id, start_aligned, end_aligned, start_extracted, end_extracted`` (time stamps ``hh.mm.ss.mmm``), then
  in train/valid the correct sentence followed by four distractors, in the public test five sentences and the
  answer index 1-5.
* MSR-VTT multiple choice as JSFusion published it (``MSR_MC_test.csv``; read in yj-yu/lsmdc
  ``videocap/datasets/lsmdc_msr.py`` and facebookresearch/fairseq ``examples/MMPT`` ``MSRVTTQAMetaProcessor``):
  tab-separated WITH a header; the columns used are ``vid_key`` (``msr7960`` = MSR-VTT ``video7960``),
  ``a1`` .. ``a5`` and ``answer``, the 0-based index of the correct sentence among a1..a5.
* A generic jsonl, one ``{"video", "candidates": [...], "answer": index}`` per line, for your own sets.
* Something-Something v2 annotations (``validation.json``: a list of ``{"id", "label", "template",
  "placeholders"}``) for the paper's SSv2 multiple choice over all label texts (``read_ssv2``).

Every malformed row raises ``AnnotationError`` naming the file and line.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipvip.data.annotations import AnnotationError, _clean, _read_json
from clipvip.io import JsonlError, read_jsonl_numbered


@dataclass(frozen=True)
class MCQuestion:
    """One video and its candidate sentences; ``answer`` is the 0-based index of the correct one; ``where`` is
    ``file:line`` for messages."""

    video_id: str
    candidates: tuple[str, ...]
    answer: int
    where: str = ""


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: multiple-choice file not found")
    return path.read_text(encoding="utf-8-sig").splitlines()


def read_lsmdc_mc(path: str | os.PathLike) -> list[MCQuestion]:
    """LSMDC16 multiple choice: 10 columns (train/valid: correct sentence first, answer 0) or 11 (public test:
    five sentences, then the answer index 1-5). Video id = clip id (its file is ``<movie>/<clip id>.avi``)."""
    path = Path(path)
    out = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        where = f"{path}:{n}"
        if len(cols) == 10:
            answer = 0
        elif len(cols) == 11:
            a = cols[10].strip()
            if not a.isdigit() or not 1 <= int(a) <= 5:
                raise AnnotationError(f"{where}: answer index must be 1-5, got {a!r}")
            answer = int(a) - 1
        else:
            raise AnnotationError(
                f"{where}: expected 10 tab-separated columns (clip id, 4 time stamps, correct sentence, 4 distractors)"
                f" or 11 (clip id, 4 time stamps, 5 sentences, answer 1-5), got {len(cols)}"
            )
        sentences = tuple(_clean(c) for c in cols[5:10])
        if not cols[0].strip() or not all(sentences):
            raise AnnotationError(f"{where}: empty clip id or sentence")
        out.append(MCQuestion(cols[0].strip(), sentences, answer, where))
    if not out:
        raise AnnotationError(f"{path}: no questions")
    return out


MSRVTT_MC_COLUMNS = ("vid_key", "a1", "a2", "a3", "a4", "a5", "answer")


def read_msrvtt_mc(path: str | os.PathLike) -> list[MCQuestion]:
    """JSFusion's MSR-VTT multiple choice (tab-separated, header with at least ``vid_key, a1..a5, answer``;
    ``answer`` 0-based). ``msr<N>`` keys become the MSR-VTT video ids ``video<N>``."""
    path = Path(path)
    lines = _lines(path)
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    fields = reader.fieldnames or []
    missing = [c for c in MSRVTT_MC_COLUMNS if c not in fields]
    if missing:
        raise AnnotationError(f"{path}:1: header lacks {missing} (JSFusion MSR-VTT MC: tab-separated, with header)")
    out = []
    for row in reader:
        n = reader.line_num
        where = f"{path}:{n}"
        if None in row or any(row.get(c) is None for c in MSRVTT_MC_COLUMNS):
            raise AnnotationError(f"{where}: expected {len(fields)} tab-separated columns like the header")
        a = row["answer"].strip()
        if not a.isdigit() or not 0 <= int(a) <= 4:
            raise AnnotationError(f"{where}: answer must be a 0-based index 0-4, got {a!r}")
        sentences = tuple(_clean(row[f"a{k}"]) for k in range(1, 6))
        key = row["vid_key"].strip()
        if not key or not all(sentences):
            raise AnnotationError(f"{where}: empty vid_key or sentence")
        video = "video" + key[3:] if re.fullmatch(r"msr\d+", key) else key
        out.append(MCQuestion(video, sentences, int(a), where))
    if not out:
        raise AnnotationError(f"{path}: no questions")
    return out


def read_mc_jsonl(path: str | os.PathLike) -> list[MCQuestion]:
    """Your own set: one ``{"video": path or id, "candidates": [sentences], "answer": 0-based index}`` per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: multiple-choice file not found")
    out = []
    try:
        for n, q in read_jsonl_numbered(path):
            cands = q.get("candidates")
            if "video" not in q or not isinstance(cands, list) or len(cands) < 2:
                raise AnnotationError(f"{path}:{n}: expected {{video, candidates: [2+ sentences], answer}}")
            ans = q.get("answer")
            if not isinstance(ans, int) or not 0 <= ans < len(cands):
                raise AnnotationError(f"{path}:{n}: answer {ans!r} is not an index into the {len(cands)} candidates")
            out.append(MCQuestion(str(q["video"]), tuple(_clean(c) for c in cands), ans, f"{path}:{n}"))
    except JsonlError as e:
        raise AnnotationError(str(e)) from None
    if not out:
        raise AnnotationError(f"{path}: no questions")
    return out


MC_READERS = {"lsmdc-mc": read_lsmdc_mc, "msrvtt-mc": read_msrvtt_mc, "jsonl": read_mc_jsonl}


# ------------------------------------------------------------------------------------------------------ SSv2


@dataclass(frozen=True)
class SSv2Video:
    video_id: str
    label: int  # index into the label file's templates
    placeholders: tuple[str, ...]
    where: str = ""


def ssv2_template_key(template: str) -> str:
    """An annotation's template ("Putting [something] on [something]") -> the label file's key (no brackets)."""
    return _clean(template.replace("[", "").replace("]", ""))


def read_ssv2(path: str | os.PathLike, classes: Sequence[str]) -> list[SSv2Video]:
    """SSv2 ``train.json`` / ``validation.json``: a JSON list of ``{"id", "template", "placeholders", ...}``;
    the class is the template (brackets dropped) looked up in ``classes`` (the label file, class-index order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SSv2 annotation file not found")
    data = _read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{id, template, placeholders}}")
    index = {_clean(c): i for i, c in enumerate(classes)}
    out = []
    for i, row in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(row, dict) or "id" not in row or "template" not in row:
            raise AnnotationError(f"{where}: expected an object with 'id' and 'template'")
        key = ssv2_template_key(str(row["template"]))
        if key not in index:
            raise AnnotationError(f"{where}: template {key!r} is not in the label file ({len(classes)} classes)")
        ph = row.get("placeholders") or []
        out.append(SSv2Video(str(row["id"]), index[key], tuple(_clean(p) for p in ph), where))
    if not out:
        raise AnnotationError(f"{path}: no videos")
    return out


_SLOT = re.compile(r"\bsomething\b", re.IGNORECASE)


def fill_something(template: str, placeholders: Sequence[str]) -> str:
    """Fill the template's "something" slots, in order, with a video's annotated objects; slots beyond the
    placeholders keep the word "something". ("Putting something on something", ["a cup", "the table"] ->
    "Putting a cup on the table".)"""
    it = iter(placeholders)
    return _SLOT.sub(lambda m: next(it, m.group(0)), template)
