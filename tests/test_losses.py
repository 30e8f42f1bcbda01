"""Losses against brute-force per-row formulas written here from the paper's Eq. 3-4 (float64 Python loops)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipvip.losses import dsl_info_nce, info_nce, ocl_loss

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)


def _emb(B: int, D: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)


def _dot(x, y, i, j) -> float:
    return float(sum(x[i, k] * y[j, k] for k in range(x.shape[1])))


def _x2y(x, y, tau: float) -> float:
    """Eq. 3 L_x2y: -1/B sum_i log( e^{x_i.y_i/tau} / sum_j e^{x_i.y_j/tau} )."""
    B = x.shape[0]
    total = 0.0
    for i in range(B):
        num = math.exp(_dot(x, y, i, i) / tau)
        den = sum(math.exp(_dot(x, y, i, j) / tau) for j in range(B))
        total += -math.log(num / den)
    return total / B


def _eq4(v, s, c, tau: float) -> tuple[float, float]:
    """Eq. 4's two video->text sums, each averaged over B (their mean is Eq. 4's 1/2B form)."""
    B = v.shape[0]
    sub = cap = 0.0
    for i in range(B):
        den_s = sum(math.exp(_dot(v, s, i, j) / tau) for j in range(B))
        den_s += sum(math.exp(_dot(v, c, i, j) / tau) for j in range(B) if j != i)
        sub += -math.log(math.exp(_dot(v, s, i, i) / tau) / den_s)
        den_c = sum(math.exp(_dot(v, c, i, j) / tau) for j in range(B))
        den_c += sum(math.exp(_dot(v, s, i, j) / tau) for j in range(B) if j != i)
        cap += -math.log(math.exp(_dot(v, c, i, i) / tau) / den_c)
    return sub / B, cap / B


def _reference(variant: str, v, f, s, c, tau: float) -> float:
    vs = [_x2y(v, s, tau), _x2y(s, v, tau)]
    vc = [_x2y(v, c, tau), _x2y(c, v, tau)]
    fc = [_x2y(f, c, tau), _x2y(c, f, tau)]
    terms = {
        "vs": vs,
        "a": vs + fc,
        "b": vs + vc,
        "c": vs + vc + fc,
        "d": list(_eq4(v, s, c, tau)) + [_x2y(s, v, tau), _x2y(c, v, tau)] + fc,
    }[variant]
    assert len(terms) == {"vs": 2, "a": 4, "b": 4, "c": 6, "d": 6}[variant]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("variant", ["vs", "a", "b", "c", "d"])
def test_ocl_objectives_match_brute_force(variant: str) -> None:
    B, D = 5, 8
    v, f, s, c = (_emb(B, D, k) for k in range(4))
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    got = ocl_loss(v, f, s, c, log_scale, variant)
    want = _reference(variant, v, f, s, c, 0.07)
    assert got.shape == () and got.dtype == torch.float64
    # float64 in, float64 throughout: equal to the Python-float reference up to summation order. A float32 step
    # anywhere would cost ~1e-7 relative and fail here.
    assert got.item() == pytest.approx(want, rel=1e-12)
    # float32 in: the loss is float32, to float32 rounding.
    got32 = ocl_loss(*(x.float() for x in (v, f, s, c)), log_scale.float(), variant)
    assert got32.dtype == torch.float32 and got32.item() == pytest.approx(want, rel=1e-5)


def test_ocl_d_differs_from_c_and_uses_cross_negatives() -> None:
    B, D = 6, 8
    v, f, s, c = (_emb(B, D, k) for k in range(4))
    ls = torch.tensor(math.log(20.0))
    assert ocl_loss(v, f, s, c, ls, "d").item() != pytest.approx(ocl_loss(v, f, s, c, ls, "c").item(), rel=1e-4)


def test_unused_inputs_may_be_none_and_missing_ones_raise() -> None:
    v, s = _emb(4, 8, 0), _emb(4, 8, 1)
    ls = torch.tensor(2.0)
    assert torch.isfinite(ocl_loss(v, None, s, None, ls, "vs"))
    assert torch.isfinite(ocl_loss(v, None, s, _emb(4, 8, 2), ls, "b"))
    with pytest.raises(ValueError, match="frame"):
        ocl_loss(v, None, s, _emb(4, 8, 2), ls, "a")
    with pytest.raises(ValueError, match="caption"):
        ocl_loss(v, _emb(4, 8, 3), s, None, ls, "d")
    with pytest.raises(ValueError, match="unknown OCL objective"):
        ocl_loss(v, None, s, None, ls, "e")


def test_info_nce_symmetric_brute_force_and_clamp() -> None:
    a, b = _emb(7, 8, 10), _emb(7, 8, 11)
    got = info_nce(a, b, torch.tensor(math.log(30.0), dtype=torch.float64))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx((_x2y(a, b, 1 / 30) + _x2y(b, a, 1 / 30)) / 2, rel=1e-12)
    # Half-precision embeddings (a bf16 tower) are upcast: the loss is computed in float32, never in bf16.
    assert info_nce(a.bfloat16(), b.bfloat16(), torch.tensor(math.log(30.0))).dtype == torch.float32
    # log scale above ln(100) is clamped: same value as exactly 100, and no gradient flows into it.
    ls = torch.tensor(math.log(500.0), requires_grad=True)
    clamped = info_nce(a, b, ls)
    assert clamped.item() == pytest.approx((_x2y(a, b, 0.01) + _x2y(b, a, 0.01)) / 2, rel=1e-5)
    clamped.backward()
    assert ls.grad is not None and ls.grad.item() == 0.0


def test_dsl_loss_brute_force() -> None:
    B, D, temp = 5, 8, 3.0
    a, b = _emb(B, D, 20), _emb(B, D, 21)
    scale = 10.0

    def direction(x, y) -> float:
        L = [[scale * _dot(x, y, i, j) for j in range(B)] for i in range(B)]
        # prior: softmax over rows (axis 0) of L / temp, times B
        W = [[0.0] * B for _ in range(B)]
        for j in range(B):
            z = sum(math.exp(L[k][j] / temp) for k in range(B))
            for i in range(B):
                W[i][j] = L[i][j] * math.exp(L[i][j] / temp) / z * B
        return sum(-W[i][i] + math.log(sum(math.exp(W[i][j]) for j in range(B))) for i in range(B)) / B

    got = dsl_info_nce(a, b, torch.tensor(math.log(scale)), dsl_temp=temp)
    assert got.item() == pytest.approx((direction(a, b) + direction(b, a)) / 2, rel=1e-5)


def test_losses_have_gradients_for_all_inputs() -> None:
    embs = [_emb(4, 8, k).float().requires_grad_() for k in range(4)]
    ls = torch.tensor(3.0, requires_grad=True)
    ocl_loss(*embs, ls, "d").backward()
    assert all(e.grad is not None and e.grad.abs().sum() > 0 for e in embs)
    assert ls.grad is not None and ls.grad.item() != 0.0
