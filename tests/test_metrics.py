"""Retrieval metrics against brute-force loops written here, DSL / QB-Norm against their direct formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from clipvip.eval import (
    bidirectional_metrics,
    dsl,
    invert_mapping,
    qb_norm,
    recall_curve,
    retrieval_metrics,
    retrieval_metrics_multi,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
)


def brute_rank(row: np.ndarray, correct: list[int], ties: str) -> float:
    """Rank of the best correct item by enumerating every ordering of the columns consistent with the scores."""
    n = len(row)
    if ties == "optimistic":
        return float(min(1 + sum(1 for j in range(n) if row[j] > row[p]) for p in correct))
    if ties == "pessimistic":
        return float(
            min(
                1 + sum(1 for j in range(n) if (row[j] > row[p]) or (row[j] == row[p] and j not in correct))
                for p in correct
            )
        )
    # mean: average over all orders that sort the scores descending (ties broken every possible way)
    total, count = 0.0, 0
    for perm in itertools.permutations(range(n)):
        if all(row[perm[i]] >= row[perm[i + 1]] for i in range(n - 1)):
            total += 1 + min(perm.index(p) for p in correct)
            count += 1
    return total / count


def brute_metrics(ranks: list[float]) -> dict[str, float]:
    r = np.array(ranks)
    return {
        "R@1": 100 * float(np.mean(r <= 1)),
        "R@5": 100 * float(np.mean(r <= 5)),
        "R@10": 100 * float(np.mean(r <= 10)),
        "MdR": float(np.median(r)),
        "MnR": float(np.mean(r)),
    }


def official_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """The release's compute_metrics (CLIP4Clip / CLIP-ViP), reimplemented: full sort + np.where on equality."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {
        "R@1": float(np.sum(ind == 0)) * 100 / len(ind),
        "R@5": float(np.sum(ind < 5)) * 100 / len(ind),
        "R@10": float(np.sum(ind < 10)) * 100 / len(ind),
        "MdR": float(np.median(ind) + 1),
        "MnR": float(np.mean(ind) + 1),
        "n": len(ind),
    }


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "mean"])
def test_single_positive_matches_brute_force_with_ties(ties: str) -> None:
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 3, size=(40, 7)).astype(np.float32)  # many ties
    q2i = rng.integers(0, 7, size=40)
    ours = retrieval_ranks(sim, q2i, ties=ties, chunk_size=6)  # chunk boundaries inside the matrix
    ref = [brute_rank(sim[q], [int(q2i[q])], ties) for q in range(40)]
    np.testing.assert_allclose(ours, ref)
    got = retrieval_metrics(sim, q2i, ties=ties)
    for k, v in brute_metrics(ref).items():
        assert got[k] == pytest.approx(v)


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "mean"])
def test_multi_positive_matches_brute_force(ties: str) -> None:
    rng = np.random.default_rng(2)
    sim = rng.integers(0, 3, size=(25, 7)).astype(np.float32)
    positives = [sorted(rng.choice(7, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(25)]
    ours = retrieval_ranks(sim, positives=positives, ties=ties, chunk_size=4)
    ref = [brute_rank(sim[q], positives[q], ties) for q in range(25)]
    np.testing.assert_allclose(ours, ref)
    # the same matrix stored column-major (as the transpose of a texts x videos matrix is) takes the item-major path
    fortran = np.asfortranarray(sim)
    np.testing.assert_allclose(retrieval_ranks(fortran, positives=positives, ties=ties, chunk_size=3), ref)
    np.testing.assert_allclose(retrieval_ranks(torch.from_numpy(sim.T.copy()).T, positives=positives, ties=ties), ref)
    got = retrieval_metrics_multi(torch.from_numpy(sim), positives, ties=ties)
    for k, v in brute_metrics(ref).items():
        assert got[k] == pytest.approx(v)


def test_random_matrix_matches_brute_force_and_official_without_ties() -> None:
    rng = np.random.default_rng(3)
    sim = rng.standard_normal((300, 300)).astype(np.float32)
    sim[np.arange(300), np.arange(300)] += 1.5  # make recalls non-trivial
    ref = brute_metrics([brute_rank(sim[q], [q], "optimistic") for q in range(300)])
    ours = retrieval_metrics(sim)
    official = official_compute_metrics(sim)
    assert official["n"] == 300
    for k in ref:
        assert ours[k] == pytest.approx(ref[k])
        assert official[k] == pytest.approx(ref[k])
    # every tie mode agrees when there are no ties
    assert retrieval_metrics(sim, ties="pessimistic") == ours == retrieval_metrics(sim, ties="mean")


def test_official_compute_metrics_double_counts_ties_ours_does_not() -> None:
    # query 0: its video ties with two others at the top -> official emits 3 entries for it (positions 0, 1, 2)
    sim = np.array(
        [
            [0.9, 0.9, 0.9, 0.1],
            [0.2, 0.8, 0.1, 0.1],
            [0.3, 0.1, 0.7, 0.1],
            [0.9, 0.1, 0.1, 0.2],  # rank 2
        ],
        dtype=np.float32,
    )
    official = official_compute_metrics(sim)
    assert official["n"] == 6  # 4 queries, 6 entries: the tied query counted three times
    assert official["R@1"] == pytest.approx(100 * 3 / 6)  # 3 of its 6 entries at position 0, truth is 3 of 4
    ours = retrieval_metrics(sim)
    assert ours["R@1"] == pytest.approx(75.0)  # queries 0, 1, 2 at rank 1 (optimistic), query 3 at rank 2
    pess = retrieval_metrics(sim, ties="pessimistic")
    assert pess["R@1"] == pytest.approx(50.0)  # query 0 at rank 3
    assert retrieval_ranks(sim, ties="mean")[0] == pytest.approx(2.0)


def test_bidirectional_multi_caption_video_to_text() -> None:
    rng = np.random.default_rng(4)
    n_videos, per = 12, 3
    t2v = np.repeat(np.arange(n_videos), per)
    rng.shuffle(t2v)
    sim = rng.standard_normal((len(t2v), n_videos)).astype(np.float32)
    out = bidirectional_metrics(torch.from_numpy(sim), t2v)
    ref_t2v = brute_metrics([brute_rank(sim[t], [int(t2v[t])], "optimistic") for t in range(len(t2v))])
    v2t = invert_mapping(t2v, n_videos)
    ref_v2t = brute_metrics([brute_rank(sim[:, v], v2t[v], "optimistic") for v in range(n_videos)])
    for k in ref_t2v:
        assert out["t2v"][k] == pytest.approx(ref_t2v[k])
        assert out["v2t"][k] == pytest.approx(ref_v2t[k])


def test_streaming_from_embeddings_equals_matrix_path_with_and_without_dsl() -> None:
    g = torch.Generator().manual_seed(5)
    # float64 so that chunked and full matrix products agree far below the gaps between scores
    q = torch.nn.functional.normalize(torch.randn(70, 16, generator=g, dtype=torch.float64), dim=1)
    items = torch.nn.functional.normalize(torch.randn(50, 16, generator=g, dtype=torch.float64), dim=1)
    q2i = torch.randint(0, 50, (70,), generator=g)
    sim = q @ items.T
    np.testing.assert_array_equal(
        retrieval_ranks_from_embeddings(q, items, q2i, chunk_size=16), retrieval_ranks(sim, q2i)
    )
    stream = retrieval_ranks_from_embeddings(q, items, q2i, dsl_temperature=100.0, chunk_size=16)
    full = retrieval_ranks(dsl(sim), q2i)
    np.testing.assert_array_equal(stream, full)


def test_input_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="diagonal"):
        retrieval_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(np.zeros((2, 2)), ties="random")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="no caption"):
        invert_mapping([0, 0, 2], 3)


def test_recall_curve() -> None:
    ranks = np.array([1, 2, 2, 7, 60])
    curve = recall_curve(ranks, max_k=10)
    assert curve[0] == pytest.approx(20.0) and curve[1] == pytest.approx(60.0) and curve[9] == pytest.approx(80.0)


def test_dsl_matches_direct_formula() -> None:
    rng = np.random.default_rng(6)
    sim = rng.uniform(-1, 1, size=(9, 5))
    e = np.exp(100 * sim)
    ref = sim * e / e.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(dsl(sim), ref, rtol=1e-10, atol=1e-300)
    out = dsl(torch.from_numpy(sim.astype(np.float32)))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-3, atol=1e-30)


def test_qb_norm_matches_reference_formula() -> None:
    rng = np.random.default_rng(7)
    test = rng.uniform(-1, 1, size=(8, 6))
    bank = rng.uniform(-1, 1, size=(20, 6))
    bank[:, 4:] -= 2.0  # items 4 and 5 are never a bank query's top-1: not activated
    test[:3, 5] += 2.0  # so these test rows (top-1 = item 5) must stay raw
    k, beta = 1, 20.0
    # reference (dynamic inverted softmax, written out directly)
    activated = set(np.argsort(-bank, axis=1)[:, :k].reshape(-1).tolist())
    z = np.exp(beta * bank).sum(axis=0)
    ref = test.copy()
    for i in range(len(test)):
        if int(np.argmax(test[i])) in activated:
            ref[i] = np.exp(beta * test[i]) / z
    assert any(int(np.argmax(test[i])) not in activated for i in range(8)), "toy must keep some rows raw"
    np.testing.assert_allclose(qb_norm(test, bank, k=k, beta=beta), ref, rtol=1e-9)
