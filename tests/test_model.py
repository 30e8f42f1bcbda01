"""The CLIP-ViP model against independent references: a dense-mask attention, open_clip, CLIP4Clip's formulas."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from clipvip import CLIPViP, tiny_config
from clipvip.model.layers import MaskedAttention, ProxyGuidedAttention, proxy_guided_mask
from clipvip.model.vision import interpolate_temporal

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)


def _brute_force_attention(q, k, v, M, T, N):
    """Per-query softmax over the keys Eq. 2 allows, one query at a time."""
    B, h, L, d = q.shape
    frame = [-1] * M + [t for t in range(T) for _ in range(N)]
    out = torch.zeros_like(q)
    for i in range(L):
        keys = [j for j in range(L) if frame[i] < 0 or frame[j] < 0 or frame[i] == frame[j]]
        s = (q[:, :, i : i + 1] @ k[:, :, keys].transpose(-1, -2)) / d**0.5  # [B, h, 1, K]
        out[:, :, i] = (s.softmax(-1) @ v[:, :, keys])[:, :, 0]
    return out


# (2, 3, 100): the proxies see 302 keys (> SHORT_KEYS: SDPA), a frame 102 (bmm -> softmax -> bmm on CPU)
@pytest.mark.parametrize("M,T,N", [(4, 3, 5), (1, 1, 4), (2, 5, 3), (2, 3, 100)])
def test_proxy_attention_matches_dense_and_brute_force(M, T, N):
    q, k, v = (torch.randn(2, 3, M + T * N, 8, dtype=torch.float64) for _ in range(3))
    fast = ProxyGuidedAttention(M, T, N).attend(q, k, v)
    dense = MaskedAttention(proxy_guided_mask(M, T, N)).attend(q, k, v)
    brute = _brute_force_attention(q, k, v, M, T, N)
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast, brute, rtol=1e-10, atol=1e-10)


def test_mask_shape_and_rules():
    m = proxy_guided_mask(2, 3, 4)
    assert m.shape == (14, 14)
    assert m[:2].all() and m[:, :2].all()  # proxies see / are seen by all
    assert m[2, 5] and not m[2, 6]  # frame 0 patch sees frame 0, not frame 1


def _vip_reference(model: CLIPViP, x: torch.Tensor) -> torch.Tensor:
    """Video Proxy ViT written out with the dense boolean mask (the plain version of Eq. 1-2)."""
    vis = model.visual
    B, T = x.shape[:2]
    p = vis.patch_embed(x) + interpolate_temporal(vis.temporal_embedding, T)[None, :, None]
    N = p.shape[2]
    prox = torch.cat([vis.class_embedding[None], vis.added_proxies]) + vis.positional_embedding[0]
    h = vis.ln_pre(torch.cat([prox.expand(B, -1, -1), p.flatten(1, 2)], 1))
    pattern = MaskedAttention(proxy_guided_mask(prox.shape[0], T, N))
    for blk in vis.transformer.resblocks:
        h = blk(h, pattern)
    return F.normalize(vis.ln_post(h[:, 0]) @ vis.proj, dim=-1)


@pytest.mark.parametrize("T", [4, 3, 1])
def test_vip_equals_dense_mask_reference(T):
    model = CLIPViP(tiny_config("vip")).double()
    x = torch.randn(2, T, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(model.visual(x), _vip_reference(model, x), rtol=1e-10, atol=1e-10)


def test_patches_only_see_their_frame_in_first_block():
    model = CLIPViP(tiny_config("vip")).double().eval()
    vis = model.visual
    x = torch.randn(1, 4, 3, 32, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 2] += torch.randn_like(x2[:, 2])

    def first_block(video):
        p = vis.patch_embed(video) + vis.temporal_embedding[None, :, None]
        prox = torch.cat([vis.class_embedding[None], vis.added_proxies]) + vis.positional_embedding[0]
        h = vis.ln_pre(torch.cat([prox[None], p.flatten(1, 2)], 1))
        return vis.transformer.resblocks[0](h, ProxyGuidedAttention(4, 4, 16))

    a, b = first_block(x), first_block(x2)
    M, N = 4, 16
    frames_a = a[:, M:].reshape(1, 4, N, -1)
    frames_b = b[:, M:].reshape(1, 4, N, -1)
    for t in (0, 1, 3):
        torch.testing.assert_close(frames_a[:, t], frames_b[:, t], rtol=0, atol=0)
    assert not torch.allclose(frames_a[:, 2], frames_b[:, 2])
    assert not torch.allclose(a[:, :M], b[:, :M])  # proxies see every frame


def test_temporal_interpolation():
    table = torch.arange(12, dtype=torch.float64)[:, None].repeat(1, 3)
    one = interpolate_temporal(table, 1)
    torch.testing.assert_close(one, table[5:7].mean(0, keepdim=True))  # the middle value
    assert interpolate_temporal(table, 12) is table
    # align_corners=False: output t samples input position (t + 0.5) * 12/T - 0.5, clamped to [0, 11]
    T = 5
    pos = ((torch.arange(T) + 0.5) * 12 / T - 0.5).clamp(0, 11).double()
    torch.testing.assert_close(interpolate_temporal(table, T)[:, 0], pos)


def test_vip_parameter_overhead():
    cfg = tiny_config("vip")
    extra = CLIPViP(cfg).num_params() - CLIPViP(dataclasses.replace(cfg, variant="meanpool")).num_params()
    W = cfg.vision.width
    assert extra == (cfg.num_proxies - 1) * W + cfg.temporal_size * W


def test_meanpool_is_mean_of_normalised_frames():
    model = CLIPViP(tiny_config("meanpool")).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    frames = torch.stack([model.encode_image(x[:, t]) for t in range(3)], 1)
    torch.testing.assert_close(model.encode_video(x), F.normalize(frames.mean(1), dim=-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["vip", "meanpool", "seqtransf", "fullattn"])
def test_gradient_checkpointing_is_exact(variant):
    model = CLIPViP(tiny_config(variant))
    x = torch.randn(2, 4, 3, 32, 32)
    ids = torch.randint(1, 49000, (2, 10))

    def run():
        model.zero_grad()
        v, t, s = model(x, ids)
        loss = (v @ t.T * s.exp()).logsumexp(0).sum()
        loss.backward()
        return v.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    v0, g0 = run()
    model.set_grad_checkpointing(True)
    v1, g1 = run()
    torch.testing.assert_close(v0, v1, rtol=0, atol=0)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_fullattn_lets_patches_see_other_frames():
    model = CLIPViP(tiny_config("fullattn")).eval()
    x = torch.randn(1, 4, 3, 32, 32)
    assert model.encode_video(x).shape == (1, 32)


def test_bad_inputs():
    model = CLIPViP(tiny_config("vip"))
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        model.encode_video(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="patch size"):
        model.encode_video(torch.randn(1, 2, 3, 30, 30))
    with pytest.raises(ValueError, match="positions"):
        model.encode_text(torch.ones(1, 100, dtype=torch.long))


@pytest.mark.parametrize("L", [50, 300])  # both kernels of dot_product_attention (bmm below SHORT_KEYS, SDPA above)
def test_full_attention_matches_brute_force(L):
    from clipvip.model.layers import FullAttention
    from clipvip.model.layers.attention import SHORT_KEYS

    assert (L <= SHORT_KEYS) == (L == 50)
    q, k, v = (torch.randn(2, 3, L, 8, dtype=torch.float64) for _ in range(3))
    p = torch.exp((q @ k.transpose(-1, -2)) / 8**0.5)
    torch.testing.assert_close(FullAttention().attend(q, k, v), (p / p.sum(-1, keepdim=True)) @ v)


def test_float64_model_keeps_float64_embeddings():
    """Embeddings are re-normalised in AT LEAST float32: a float64 model stays float64 (the exactness tests rely on
    it, issue #15), a float32 one stays float32."""
    model = CLIPViP(tiny_config("vip"))
    video = torch.randn(2, 4, 3, 32, 32)
    assert model.encode_video(video).dtype == torch.float32
    model = model.double()
    assert model.encode_video(video.double()).dtype == torch.float64
    assert model.encode_text(["a red ball"]).dtype == torch.float64
