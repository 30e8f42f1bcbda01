"""Inference mode for a CLIP-ViP model: bf16 weights where the hardware has fast bf16, optional ``torch.compile``.

WHY: a ViP-B/32 video is ~104 GFLOP, almost all of it in the linear layers, so the encoder runs at the speed of the
matmul units. On CPUs with AVX512-BF16/AMX and on Ampere+ GPUs, bf16 matmuls are 2-8x faster than fp32; casting the
weights once (not per call, as autocast does) also halves the weight memory traffic. ``torch.compile`` fuses the
element-wise work between the matmuls (LayerNorm, QuickGELU, residual adds, layout copies).

Embeddings stay comparable across precisions: ``encode_video`` / ``encode_text`` still return fp32, L2-normalised
[B, E] (``CLIPViP.encode_*`` re-normalise in fp32), agreeing with the fp32 model to cosine > 0.999.
"""

from __future__ import annotations

from typing import Literal

import torch

from clipvip.model import CLIPViP

InferenceDType = Literal["auto", "bf16", "fp32"]


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matmuls run natively: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX (oneDNN)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # without these instructions bf16 matmuls are emulated, slower than fp32
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_dtype(dtype: InferenceDType, device: torch.device | str = "cpu") -> torch.dtype:
    """ "auto" -> bf16 where it is fast on ``device``, else fp32; "bf16" / "fp32" as asked."""
    if dtype == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "fp32":
        return torch.float32
    raise ValueError(f"unknown inference dtype {dtype!r}; expected 'auto', 'bf16' or 'fp32'")


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
    if target != torch.float32:
        logit_scale = model.logit_scale.detach().float().clone()
        model.to(target)
        model.logit_scale.data = logit_scale  # temperature in fp32: bf16 would turn ln(100) into ln(98.9)
    for tower in (model.visual, model.text):
        if compile:
            # "freezing" folds the (now constant) weights into the graph and pre-packs them for oneDNN on CPU.
            tower.compile(options={"freezing": True} if device.type == "cpu" else None)
    return model
