"""Zero-shot classification / multiple choice on a toy model whose embeddings are constructed (known answers),
label-list readers on the real files, and the NMI domain-gap analysis on fixed features."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clipvip.eval import (
    PAPER_TEMPLATES,
    class_text_embeddings,
    domain_gap_nmi,
    label_to_text,
    multiple_choice,
    multiple_choice_accuracy,
    plot_projection,
    read_labels,
    zero_shot_classify,
)

CLASSES = ["brush_hair", "ride_bike", "ApplyEyeMakeup", "climb_stairs", "kick_ball", "TaiChi"]
WORDS = [label_to_text(c) for c in CLASSES]  # "brush hair", ... : what the prompts contain


class KeywordTextModel(nn.Module):
    """Text embedding = one-hot of the first class phrase the text contains (+ a template-specific offset, so the
    template average matters); videos are not encoded here (their embeddings are built by the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def encode_text(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        self.seen.extend(texts)
        out = torch.zeros(len(texts), len(WORDS) + 1)
        for i, t in enumerate(texts):
            for k, w in enumerate(WORDS):
                if w in t:
                    out[i, k] = 1.0
                    break
            out[i, -1] = 0.3 if t.startswith("a video") else -0.3
        return torch.nn.functional.normalize(out, dim=1)


def test_zero_shot_classification_known_answer() -> None:
    model = KeywordTextModel()
    templates = ("a person {}.", "a video of a person {}.")
    class_emb = class_text_embeddings(model, CLASSES, templates)
    assert "a person brush hair." in model.seen and "a video of a person apply eye makeup." in model.seen
    # template offsets cancel in the average: class embedding = the class one-hot
    torch.testing.assert_close(class_emb, torch.eye(len(WORDS), len(WORDS) + 1))
    # 6 videos: 4 point at their class; video 4 is closest to class 0 then its own; video 5 points at class 1 only
    e = torch.eye(len(WORDS), len(WORDS) + 1)
    videos = torch.stack([e[0], e[1], e[2], e[3], 0.9 * e[0] + 0.5 * e[4], e[1]])
    labels = [0, 1, 2, 3, 4, 5]
    out = zero_shot_classify(torch.nn.functional.normalize(videos, dim=1), class_emb, labels)
    assert out["top1"] == pytest.approx(100 * 4 / 6)
    # top-5: video 5's class (all-zero score) ties with three other zero classes behind class 1 -> optimistic rank 2
    assert out["top5"] == pytest.approx(100.0)
    assert PAPER_TEMPLATES == ("a person {}.",)


def test_multiple_choice_known_answer_and_ties() -> None:
    model = KeywordTextModel()
    e = torch.eye(len(WORDS) + 1)
    videos = torch.stack([e[0], e[2], e[5]])
    candidates = [
        ["a person brush hair", "a person ride bike", "a person kick ball"],  # answer 0: correct
        ["a person ride bike", "a person apply eye makeup", "a person tai chi"],  # answer 2: wrong (picks 1)
        ["a person tai chi", "a person climb stairs", "a person kick ball"],  # answer 0: correct
    ]
    out = multiple_choice(model, videos, candidates, [0, 2, 0])
    assert out == {"accuracy": pytest.approx(100 * 2 / 3), "n": 3}
    # a video equally close to all candidates: 1/K credit under "mean", none under "pessimistic", full optimistic
    cand = torch.ones(1, 4, 3) / 3**0.5
    v = torch.ones(1, 3) / 3**0.5
    assert multiple_choice_accuracy(v, cand, [1])["accuracy"] == pytest.approx(25.0)
    assert multiple_choice_accuracy(v, cand, [1], ties="pessimistic")["accuracy"] == 0.0
    assert multiple_choice_accuracy(v, cand, [1], ties="optimistic")["accuracy"] == 100.0


def test_read_labels_real_files(shared_fixtures: Path) -> None:
    labels = shared_fixtures / "labels"
    hmdb = read_labels(labels / "hmdb51_label_map.txt")
    ucf = read_labels(labels / "ucf101_label_map.txt")
    k400 = read_labels(labels / "kinetics400_label_map.txt")
    ssv2 = read_labels(labels / "something-something-v2-labels.json")
    assert (len(hmdb), len(ucf), len(k400), len(ssv2)) == (51, 101, 400, 174)
    assert hmdb[0] == "brush_hair" and label_to_text(hmdb[0]) == "brush hair"
    assert ucf[0] == "ApplyEyeMakeup" and label_to_text(ucf[0]) == "apply eye makeup"
    assert k400[0] == "abseiling"
    assert ssv2[5] == "Closing something"  # index order from the {"template": "index"} map, not file order


def test_read_labels_indexed_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
    assert read_labels(tmp_path / "classInd.txt") == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    (tmp_path / "k.csv").write_text("id,name\n1,air drumming\n0,abseiling\n")
    assert read_labels(tmp_path / "k.csv") == ["abseiling", "air drumming"]
    (tmp_path / "gap.txt").write_text("0 a\n2 b\n")
    with pytest.raises(ValueError, match="contiguous"):
        read_labels(tmp_path / "gap.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_labels(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_labels(tmp_path / "missing.txt")


def _features(texts: list[str]) -> np.ndarray:
    """Fixed feature function: source decided by the text's prefix, plus per-text noise from its hash."""
    out = []
    for t in texts:
        rng = np.random.default_rng(zlib.crc32(t.encode()))
        x = rng.standard_normal(16) * 0.3
        if t.startswith("sub"):
            x[0] += 3.0
        out.append(x)
    return np.stack(out)


def test_nmi_near_one_for_separated_sources_and_near_zero_for_one_source(tmp_path: Path) -> None:
    subs = [f"sub {i}" for i in range(300)]
    caps = [f"cap {i}" for i in range(300)]
    sep = domain_gap_nmi(subs, caps, _features, n_per_source=100, repeats=2)
    assert sep.mean > 0.95 and len(sep.scores) == 2
    same = domain_gap_nmi(caps[:100], caps[100:200], _features, n_per_source=100, repeats=2)
    assert same.mean < 0.05
    png = plot_projection(sep, tmp_path / "pca.png", ("subtitles", "captions"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
