"""evaluate_retrieval end to end on a tiny model: against per-item encoding + a brute-force rank loop, the cache,
skipped videos, and the trainer-facing guarantees (mode restored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import clipvip
from clipvip.eval import evaluate_retrieval, model_fingerprint, retrieval_ranks, score_retrieval

WORDS = ["dog", "cat", "car", "piano", "river", "cake"]


class ToyEvalDataset(torch.utils.data.Dataset):
    """Eval-split contract: one item per video {"video" [T,3,H,W], "video_index"}; flat texts + text_to_video."""

    def __init__(self, n_videos: int = 6, bad: tuple[int, ...] = (), frames: int = 4, size: int = 32) -> None:
        g = torch.Generator().manual_seed(11)
        self.videos = torch.randn(n_videos, frames, 3, size, size, generator=g)
        self.texts = [f"a {w} {k}" for w in WORDS[:n_videos] for k in ("video", "clip")]
        self.text_to_video = [i for i in range(n_videos) for _ in range(2)]
        self.bad = set(bad)
        self.num_frames = frames

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i in self.bad:
            return {"video_index": i, "error": "cannot decode"}
        return {"video": self.videos[i], "video_index": i}


def toy_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [it for it in items if "error" not in it]
    return {
        "video": torch.stack([it["video"] for it in ok]) if ok else None,
        "video_index": torch.tensor([it["video_index"] for it in ok], dtype=torch.long),
        "skipped": [{"video_index": it["video_index"], "error": it["error"]} for it in items if "error" in it],
    }


@pytest.fixture(scope="module")
def model() -> clipvip.CLIPViP:
    torch.manual_seed(0)
    return clipvip.CLIPViP(clipvip.tiny_config()).eval()


def brute_ranks(sim: np.ndarray, correct: list[list[int]]) -> list[int]:
    return [min(1 + sum(1 for v in sim[q] if v > sim[q][c]) for c in cs) for q, cs in enumerate(correct)]


def test_evaluate_retrieval_matches_per_item_encoding(model: clipvip.CLIPViP) -> None:
    ds = ToyEvalDataset()
    model.train()  # the trainer calls this mid-training: mode must come back
    out = evaluate_retrieval(
        model, ds, batch_size=4, use_dsl=True, collate_fn=toy_collate, progress=False, keep_ranks=True
    )
    assert model.training
    model.eval()
    with torch.inference_mode():
        v = torch.cat([model.encode_video(ds.videos[i : i + 1]) for i in range(len(ds))])
        t = torch.cat([model.encode_text([s]) for s in ds.texts])
    sim = (t @ v.T).numpy()
    t2v_ref = brute_ranks(sim, [[j] for j in ds.text_to_video])
    v2t_ref = brute_ranks(sim.T, [[2 * i, 2 * i + 1] for i in range(len(ds))])
    np.testing.assert_array_equal(out["ranks"]["t2v"], t2v_ref)
    np.testing.assert_array_equal(out["ranks"]["v2t"], v2t_ref)
    assert out["t2v"]["R@1"] == pytest.approx(100 * np.mean(np.array(t2v_ref) <= 1))
    assert out["v2t"]["MnR"] == pytest.approx(np.mean(v2t_ref))
    # DSL direction results: the direct formula on the reference matrix, ranked by the brute-force loop
    e = np.exp(100 * sim.astype(np.float64))
    dsl_t2v = sim * e / e.sum(0, keepdims=True)
    assert out["t2v_dsl"]["MnR"] == pytest.approx(np.mean(brute_ranks(dsl_t2v, [[j] for j in ds.text_to_video])))
    assert out["counts"] == {
        "texts": 12,
        "videos": 6,
        "skipped_videos": 0,
        "dropped_texts": 0,
        "evaluated_videos": 6,
        "evaluated_texts": 12,
        "missing_videos": 0,
        "missing_texts": 0,
        "skipped_files": [],
    }
    assert out["from_cache"] is False


def test_cache_hit_second_run_and_miss_after_weight_change(model: clipvip.CLIPViP, tmp_path: Path) -> None:
    ds = ToyEvalDataset()
    kw = dict(batch_size=3, collate_fn=toy_collate, progress=False, cache_dir=tmp_path)
    first = evaluate_retrieval(model, ds, **kw)
    second = evaluate_retrieval(model, ds, **kw)
    assert first["from_cache"] is False and second["from_cache"] is True
    assert first["t2v"] == second["t2v"] and first["v2t"] == second["v2t"]
    fp = model_fingerprint(model)
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    try:
        assert model_fingerprint(model) != fp
        assert evaluate_retrieval(model, ds, **kw)["from_cache"] is False
    finally:
        with torch.no_grad():
            model.logit_scale.sub_(1.0)
    ds.texts[0] = "another caption"  # different data -> different key
    assert evaluate_retrieval(model, ds, **kw)["from_cache"] is False


def test_skipped_videos_are_dropped_and_counted(model: clipvip.CLIPViP) -> None:
    ds = ToyEvalDataset(bad=(2,))
    out = evaluate_retrieval(model, ds, batch_size=4, collate_fn=toy_collate, progress=False, keep_ranks=True)
    counts = out["counts"]
    assert {k: counts[k] for k in ("texts", "videos", "skipped_videos", "dropped_texts")} == {
        "texts": 12,
        "videos": 6,
        "skipped_videos": 1,
        "dropped_texts": 2,
    }
    # the toy dataset has no file paths: the unreadable video is named by its index
    assert (counts["evaluated_videos"], counts["evaluated_texts"], counts["skipped_files"]) == (5, 10, [2])
    assert len(out["ranks"]["t2v"]) == 10 and len(out["ranks"]["v2t"]) == 5


def test_score_retrieval_streaming_equals_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(3)
    t = torch.nn.functional.normalize(torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(20, 8, generator=g, dtype=torch.float64), dim=1)
    t2v = np.repeat(np.arange(20), 2)
    full = score_retrieval(t, v, t2v, use_dsl=True, keep_ranks=True)
    import clipvip.eval.retrieval as r

    monkeypatch.setattr(r, "MAX_MATRIX_ELEMS", 10)
    streamed = score_retrieval(t, v, t2v, use_dsl=True, keep_ranks=True)
    for k in ("t2v", "v2t", "t2v_dsl", "v2t_dsl"):
        np.testing.assert_array_equal(full["ranks"][k], streamed["ranks"][k])
    np.testing.assert_array_equal(full["ranks"]["t2v"], retrieval_ranks((t @ v.T).numpy(), t2v))


def test_qbnorm_option_runs_with_a_query_bank(model: clipvip.CLIPViP) -> None:
    ds = ToyEvalDataset()
    bank = [f"a {w} outdoors" for w in WORDS] * 3
    out = evaluate_retrieval(model, ds, collate_fn=toy_collate, progress=False, query_bank_texts=bank)
    assert set(out["t2v_qbnorm"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}


class Interrupted(Exception):
    pass


def test_embed_videos_resumes_after_interruption(model: clipvip.CLIPViP, tmp_path: Path) -> None:
    from clipvip.eval import embed_videos

    ds = ToyEvalDataset()
    full = embed_videos(model, ds, batch_size=2, collate_fn=toy_collate, progress=False)
    partial = tmp_path / "videos.partial.npz"
    requested: list[int] = []

    class Crashing(ToyEvalDataset):
        crash_at: int | None = 4

        def __getitem__(self, i: int) -> dict[str, Any]:
            requested.append(i)
            if i == self.crash_at:
                raise Interrupted
            return super().__getitem__(i)

    crashing = Crashing()
    with pytest.raises(Interrupted):
        embed_videos(
            model,
            crashing,
            batch_size=2,
            collate_fn=toy_collate,
            progress=False,
            partial_path=partial,
            checkpoint_every=1,
        )
    assert partial.exists()
    requested.clear()
    crashing.crash_at = None
    resumed = embed_videos(
        model, crashing, batch_size=2, collate_fn=toy_collate, progress=False, partial_path=partial, checkpoint_every=1
    )
    assert sorted(requested) == [4, 5]  # finished videos were not decoded again
    torch.testing.assert_close(resumed, full)
    assert not partial.exists()
