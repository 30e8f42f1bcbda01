"""ANN search (clipvip.index.ann) against a brute-force NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from clipvip.index.ann import AnnConfig, AnnIndex, build_ann, choose_kind, default_nlist, exact_topk, recall_at_k


def _clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(emb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ emb.astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


def test_exact_topk_matches_full_sort_across_blocks():
    both = _clustered(5007, 16, 20, 0)
    emb, q = both[:5000], both[5000:]
    s, i = exact_topk(emb, q, 10, block=777)  # blocks that do not divide N
    bs, bi = _brute(emb, q, 10)
    np.testing.assert_allclose(s, bs, atol=1e-5)
    assert (i == bi).mean() > 0.98  # ties at float32 precision may swap neighbours
    assert set(map(tuple, np.sort(i, 1))) == set(map(tuple, np.sort(bi, 1))) or np.allclose(s, bs, atol=1e-5)
    s1, i1 = exact_topk(emb[:5], q[:1], 10)  # k > N
    assert i1.shape == (1, 5) and sorted(i1[0].tolist()) == [0, 1, 2, 3, 4]


def test_choose_kind_by_size():
    cfg = AnnConfig(exact_max=100, hnsw_max=1000)
    assert [choose_kind(n, cfg) for n in (1, 100, 101, 1000, 1001)] == ["exact", "exact", "hnsw", "hnsw", "ivf"]
    assert default_nlist(1_000_000) == 1024 and default_nlist(10) == 64 and default_nlist(10**9) == 4096
    assert build_ann(np.eye(4, dtype=np.float32), "auto") is None


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_brute_force(kind, tmp_path):
    both = _clustered(20_200, 32, 64, 2)  # queries: held-out draws from the same mixture
    emb, q = both[:20_000], both[20_000:]
    cfg = AnnConfig(target_recall=0.95, ivf_nlist=128, tune_queries=100)
    ann = build_ann(emb, kind, cfg)
    assert ann is not None and ann.kind == kind and ann.ntotal == len(emb)
    _, truth = _brute(emb, q, 10)
    _, found = ann.search(q, 10)
    r = recall_at_k(found, truth)
    assert r >= 0.9, f"{kind} knob={ann.knob}: recall@10 {r:.3f}"
    # the smallest knob gives lower recall: tuning did something
    knob = ann.knob
    ann.set_knob(1)
    assert recall_at_k(ann.search(q, 10)[1], truth) < r
    ann.set_knob(knob)
    ann.save(tmp_path / "a.faiss")
    again = AnnIndex.load(tmp_path / "a.faiss", kind, knob)
    np.testing.assert_array_equal(again.search(q, 10)[1], found)


def test_recall_at_k_counts_overlap():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, -1, -1]]), truth) == pytest.approx(4 / 6)
