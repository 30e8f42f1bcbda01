"""Which floating-point type a model runs in: one resolver for every ``--dtype`` / ``--precision`` flag.

WHY one: the encoders (``clipvip.inference``) and the captioner both turn "auto" into a dtype, and both must
answer the same question the same way: does this device run bf16 matmuls natively? Where it does, bf16 halves the
memory traffic at no speed cost; where it does not (a CPU without AVX512-BF16/AMX), bf16 is emulated and slower
than fp32. The callers differ only in what they allow, which they say through arguments.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matmuls run natively: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX (oneDNN)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # without these instructions bf16 matmuls are emulated, slower than fp32
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_dtype(
    dtype: str,
    device: torch.device | str = "cpu",
    *,
    allowed: tuple[str, ...] = ("bf16", "fp32"),
    cpu_bf16: bool = True,
) -> torch.dtype:
    """``dtype`` ("auto" or one of ``allowed``) -> a torch dtype for ``device``.

    "auto": bf16 where it is fast on ``device``; else, on a CUDA GPU, fp16 when ``allowed`` includes it; else fp32.
    ``cpu_bf16=False`` keeps "auto" at fp32 on every CPU whatever its instructions (the captioner's rule)."""
    if dtype == "auto":
        device = torch.device(device)
        if device.type == "cpu" and not cpu_bf16:
            return torch.float32
        if bf16_is_fast(device):
            return torch.bfloat16
        if device.type == "cuda" and "fp16" in allowed:
            return torch.float16
        return torch.float32
    if dtype not in allowed:
        expected = ", ".join(repr(d) for d in ("auto", *allowed))
        raise ValueError(f"unknown inference dtype {dtype!r}; expected one of {expected}")
    return DTYPES[dtype]
