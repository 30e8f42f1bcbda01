"""optimize_for_inference against the untouched fp32 model (the reference: same weights, plain eager fp32)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from clipvip import CLIPViP, tiny_config
from clipvip.inference import optimize_for_inference
from clipvip.precision import bf16_is_fast, resolve_dtype

pytestmark = pytest.mark.numerics  # re-run under other CPU kernels by `make test` (Makefile)

TEXTS = ["a dog runs on the beach", "someone is cooking pasta", "a man plays the guitar"]


def _model(variant="vip"):
    return CLIPViP(tiny_config(variant)).eval()


def _assert_unit_fp32(e):
    assert e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(e.shape[0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["vip", "meanpool"])
def test_bf16_agrees_with_fp32(variant):
    ref_model = _model(variant)
    video = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        ref_v, ref_t = ref_model.encode_video(video), ref_model.encode_text(TEXTS)
    fast = optimize_for_inference(copy.deepcopy(ref_model), dtype="bf16", compile=False)
    assert fast.visual.conv1.weight.dtype == torch.bfloat16
    assert fast.logit_scale.dtype == torch.float32 and fast.logit_scale.item() == ref_model.logit_scale.item()
    with torch.no_grad():
        v, t = fast.encode_video(video), fast.encode_text(TEXTS)
    _assert_unit_fp32(v)
    _assert_unit_fp32(t)
    # bf16 keeps ~3 significant digits, but every GEMM accumulates in fp32 whichever kernel runs it (AMX,
    # AVX-512-BF16, or AVX2 emulation under `make test-isa`), so the embedding's direction moves by < 1e-3.
    assert F.cosine_similarity(v, ref_v).min() > 0.999
    assert F.cosine_similarity(t, ref_t).min() > 0.999
    assert not torch.equal(v, ref_v)  # it really ran in bf16


def test_fp32_keeps_numbers_and_disables_grad():
    ref_model = _model()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = ref_model.encode_video(video)
    fast = optimize_for_inference(copy.deepcopy(ref_model), dtype="fp32", compile=False)
    assert not fast.training
    assert not any(p.requires_grad for p in fast.parameters())
    out = fast.encode_video(video)  # no torch.no_grad(): no graph is built anyway
    assert out.grad_fn is None
    _assert_unit_fp32(out)
    # fp32 inference folds QuickGELU into SiLU and fuses the patch embedding into one GEMM: exact in real
    # arithmetic, a different float32 rounding (~1e-7 on unit vectors).
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # applying it twice changes nothing
    torch.testing.assert_close(optimize_for_inference(fast, dtype="fp32").encode_video(video), ref)


@pytest.mark.slow  # one torch.compile of a tiny tower: ~20 s of C++ compilation on a fresh cache
def test_compiled_matches_eager():
    ref_model = _model()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = ref_model.encode_video(video)
        fast = optimize_for_inference(copy.deepcopy(ref_model), dtype="fp32", compile=True)
        out = fast.encode_video(video)
        # Frozen: the weights were baked into the compiled graph at the first call (pre-packed for the GEMM
        # library), so changing a parameter afterwards cannot change the output. Unfrozen, this flips its sign.
        fast.visual.proj.data.neg_()
        after = fast.encode_video(video)
        assert not torch.allclose(ref_model.visual.proj, fast.visual.proj)
    _assert_unit_fp32(out)
    # inductor fuses ops and pre-packs the frozen weights for MKL/oneDNN, whose blocking (hence summation order)
    # depends on the CPU's instruction set: float32 rounding of another order, well inside 1e-4.
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, ref, rtol=1e-4, atol=1e-5)


def test_dtype_resolution():
    assert resolve_dtype("fp32") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype("auto") == (torch.bfloat16 if bf16_is_fast("cpu") else torch.float32)
    with pytest.raises(ValueError, match="unknown inference dtype"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="unknown inference dtype 'fp16'"):  # the encoders never run in fp16
        resolve_dtype("fp16")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_dtype_policy_of_the_encoders_and_the_captioner(monkeypatch, fast: bool) -> None:
    """One resolver, two callers' rules: encoders take bf16 where it is native, else fp32; the captioner takes bf16
    or else fp16 on a GPU, and fp32 on every CPU."""
    import clipvip.precision

    monkeypatch.setattr(clipvip.precision, "bf16_is_fast", lambda device="cpu": fast)
    half = torch.bfloat16 if fast else torch.float32
    assert resolve_dtype("auto", "cpu") == half and resolve_dtype("auto", "cuda") == half
    caption = {"allowed": ("fp32", "bf16", "fp16"), "cpu_bf16": False}
    assert resolve_dtype("auto", "cpu", **caption) == torch.float32
    assert resolve_dtype("auto", "cuda", **caption) == (torch.bfloat16 if fast else torch.float16)
    assert resolve_dtype("fp16", "cpu", **caption) == torch.float16


def test_proxy_attention_gradients_match_dense_mask():
    """The buffer-writing ProxyGuidedAttention (a speed change) back-propagates like the dense-mask reference."""
    from clipvip.model.layers import MaskedAttention, ProxyGuidedAttention, proxy_guided_mask

    M, T, N = 3, 4, 5
    qkv = [torch.randn(2, 3, M + T * N, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    g = torch.randn(2, 3, M + T * N, 8, dtype=torch.float64)
    fast = torch.autograd.grad(ProxyGuidedAttention(M, T, N).attend(*qkv), qkv, g)
    dense = torch.autograd.grad(MaskedAttention(proxy_guided_mask(M, T, N)).attend(*qkv), qkv, g)
    for a, b in zip(fast, dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_quick_gelu_fold_is_exact_for_both_towers(tmp_path):
    """QuickGELU(u) = SiLU(1.702 u) / 1.702: the folded MLPs compute the same embeddings as the original model."""
    from clipvip.inference import fold_quick_gelu
    from clipvip.model.layers import QuickGELU

    ref_model = _model()
    assert any(isinstance(m, QuickGELU) for m in ref_model.modules())
    folded = copy.deepcopy(ref_model)
    fold_quick_gelu(folded)
    assert not any(isinstance(m, QuickGELU) for m in folded.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in folded.text.modules())
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode_video(video), ref_model.encode_video(video), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(folded.encode_text(TEXTS), ref_model.encode_text(TEXTS), rtol=1e-6, atol=1e-6)
    fold_quick_gelu(folded)  # nothing left to fold: idempotent
    with torch.no_grad():
        torch.testing.assert_close(folded.encode_video(video), ref_model.encode_video(video), rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="optimize_for_inference"):  # saved, it would load as a different model
        folded.save_pretrained(tmp_path / "folded")
