"""Inference mode for a CLIP-ViP model: bf16 weights where the hardware has fast bf16, optional ``torch.compile``.

WHY: a ViP-B/32 video is ~104 GFLOP, almost all of it in the linear layers, so the encoder runs at the speed of the
matmul units. On CPUs with AVX512-BF16/AMX and on Ampere+ GPUs, bf16 matmuls are 2-8x faster than fp32; casting the
weights once (not per call, as autocast does) also halves the weight memory traffic. ``torch.compile`` fuses the
element-wise work between the matmuls (LayerNorm, QuickGELU, residual adds, layout copies) and, on CPU, freezes the
weights so they are pre-packed for the GEMM libraries once instead of on every call.

Embeddings stay comparable across precisions: ``encode_video`` / ``encode_text`` still return fp32, L2-normalised
[B, E] (``CLIPViP.encode_*`` re-normalise in fp32), agreeing with the fp32 model to cosine > 0.999.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import nn

from clipvip.model import CLIPViP
from clipvip.model.layers import MLP, QuickGELU
from clipvip.precision import resolve_dtype

InferenceDType = Literal["auto", "bf16", "fp32"]


def optimize_for_inference(model: CLIPViP, dtype: InferenceDType = "auto", compile: bool = False) -> CLIPViP:
    """Prepare ``model`` (in place, and returned) for encoding only: eval mode, no parameter gradients, weights in
    ``dtype`` ("auto": bf16 where the device has fast bf16, else fp32), and optionally ``torch.compile``.

    ``encode_video`` / ``encode_text`` keep their contract: fp32, L2-normalised [B, E]. ``logit_scale`` stays fp32.
    ``compile=True`` pays a one-off compilation (tens of seconds on a CPU, again for each new input shape) and is
    worth it for long jobs (eval, indexing), not for one video. Use a fresh model to train again afterwards.
    """
    device = model.device
    target = resolve_dtype(dtype, device)
    model.eval()
    model.requires_grad_(False)
    fold_quick_gelu(model)  # before the cast: the rescaling is done in the weights' fp32
    if target != torch.float32:
        logit_scale = model.logit_scale.detach().float().clone()
        model.to(target)
        model.logit_scale.data = logit_scale  # temperature in fp32: bf16 would turn ln(100) into ln(98.9)
    if compile:
        for tower in (model.visual, model.text):
            compile_frozen(tower) if device.type == "cpu" else tower.compile()
    return model


def fold_quick_gelu(model: nn.Module) -> None:
    """Rewrite every ``Linear -> QuickGELU -> Linear`` MLP (in place) as ``Linear -> SiLU -> Linear``, exactly.

    QuickGELU(u) = u * sigmoid(1.702 u) = SiLU(1.702 u) / 1.702, so scaling the first layer by 1.702 and the second
    layer's weight by 1/1.702 gives the same function. Why: SiLU is one kernel where QuickGELU is two (eager bf16
    spent more time in its mul + sigmoid than in attention), and with frozen weights on CPU oneDNN runs the first
    GEMM with SiLU fused as its epilogue ('swish'), so the [tokens, 4W] hidden activation is never re-read; measured
    in ``bench_encoder.py``. A model already folded has no QuickGELU left, so folding twice changes nothing.
    """
    with torch.no_grad():
        for mlp in model.modules():
            if isinstance(mlp, MLP) and isinstance(mlp.act, QuickGELU):
                mlp.fc.weight.mul_(QuickGELU.alpha)
                mlp.fc.bias.mul_(QuickGELU.alpha)
                mlp.proj.weight.div_(QuickGELU.alpha)
                mlp.act = nn.SiLU()


def compile_frozen(module: nn.Module) -> None:
    """``torch.compile`` ``module`` (in place) with inductor's *freezing*: the weights become constants of the graph,
    pre-packed once for MKL (fp32) / oneDNN (bf16, with bias and activation fused into the GEMM on CPU).

    Why not ``module.compile(options={"freezing": True})``: torch 2.14 does not apply ``freezing`` given that way;
    the generated code still read every weight as a graph input and called plain ``addmm`` (seen in
    ``TORCH_LOGS=output_code``). Freezing is decided when the graph is compiled, lazily at the first call, so the
    setting is patched around every call (a context manager, microseconds) rather than set globally.
    Frozen weights are baked in: changing a parameter afterwards does not change the output (tested).
    """
    import torch._inductor.config as inductor_config  # here: importing inductor costs ~1 s, only compile needs it

    compiled = torch.compile(module.forward)

    @functools.wraps(module.forward)
    def forward(*args: object, **kwargs: object) -> object:
        with inductor_config.patch(freezing=True):
            return compiled(*args, **kwargs)

    module.forward = forward
