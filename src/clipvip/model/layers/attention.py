"""Multi-head attention with pluggable attention *patterns*.

A pattern decides which keys each query may see. It is an object, not a string or an optional mask argument, so
every code path is visible at the call site:

- ``FullAttention``: every token sees every token (CLIP ViT, the Full-Attention ablation).
- ``CausalAttention``: CLIP's text tower.
- ``ProxyGuidedAttention``: CLIP-ViP Eq. 2. Proxies see all tokens; a patch sees the proxies and its own frame.
  Computed as two `dot_product_attention` calls, never materialising a (M+T*N)^2 mask or score matrix;
  the per-frame keys and the output are each written in one pass (layout copies cost as much as the attention
  itself on a CPU).
- ``MaskedAttention``: an explicit dense boolean mask; ``proxy_guided_mask`` builds the Eq. 2 mask for it. This is
  the straightforward reference that tests compare ``ProxyGuidedAttention`` against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionPattern(Protocol):
    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q, k, v: [B, h, L, d] -> [B, h, L, d]."""
        ...


@dataclass(frozen=True)
class FullAttention:
    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return dot_product_attention(q, k, v)


@dataclass(frozen=True)
class CausalAttention:
    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@dataclass(frozen=True)
class MaskedAttention:
    mask: Tensor  # bool [L, L], True = may attend

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask.to(q.device))


@dataclass(frozen=True)
class ProxyGuidedAttention:
    """Sequence layout: ``[M proxies ; frame 0 (N patches) ; ... ; frame T-1]``."""

    num_proxies: int  # M
    num_frames: int  # T
    patches_per_frame: int  # N

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, h, L, d = q.shape
        M, T, N = self.num_proxies, self.num_frames, self.patches_per_frame
        assert L == M + T * N, f"sequence length {L} != M + T*N = {M} + {T}*{N}"

        def frames(x: Tensor) -> Tensor:  # patch rows [B, h, T*N, d] -> view [B, T, h, N, d]
            return x[:, :, M:].unflatten(2, (T, N)).transpose(1, 2)

        def keys_per_frame(x: Tensor) -> Tensor:  # [B, h, L, d] -> [B*T, h, M+N, d], written in one pass
            out = x.new_empty(B, T, h, M + N, d)
            out[:, :, :, :M] = x[:, None, :, :M]  # the proxies' keys, broadcast to every frame
            out[:, :, :, M:] = frames(x)
            return out.flatten(0, 1)

        # The result is written straight into a [B, L, h, d] buffer and returned as its [B, h, L, d] transpose,
        # so the caller's transpose back to [B, L, h*d] is free (no concatenation, no extra layout copies).
        out = q.new_empty(B, L, h, d)
        # 1) proxies attend to every token: [B, h, M, d]
        out[:, :M] = dot_product_attention(q[:, :, :M], k, v).transpose(1, 2)
        # 2) patches attend to [proxies ; own frame], batched over (B, T): [B*T, h, N, d]
        q_patch = frames(q).reshape(B * T, h, N, d)
        out_patch = dot_product_attention(q_patch, keys_per_frame(k), keys_per_frame(v))
        out[:, M:].unflatten(1, (T, N)).copy_(out_patch.view(B, T, h, N, d).transpose(2, 3))  # -> [B, T, N, h, d]
        return out.transpose(1, 2)


SHORT_KEYS = 256


def dot_product_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v, [..., Lq, d] x [..., Lk, d] -> [..., Lq, d], with the kernel that suits the shape.

    On CPU, for short key sequences (a frame's 50-53 keys, up to ``SHORT_KEYS``) it is written as bmm -> softmax ->
    bmm: torch's CPU flash-attention kernel works in blocks sized for long sequences and ran ViP's per-frame shapes
    at ~80 GFLOP/s, 12% of the time of a bf16 ViP-B/32 forward for 1% of its FLOPs (``bench_encoder.py
    --profile``), while their score matrices are small ([B*T, h, 49, 53]). Long sequences (the proxies' 592 keys,
    the Full-Attention ablation) and other devices use SDPA's fused kernels, which never hold the scores.
    """
    if q.device.type != "cpu" or k.shape[-2] > SHORT_KEYS:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v


def proxy_guided_mask(num_proxies: int, num_frames: int, patches_per_frame: int) -> Tensor:
    """Dense bool [L, L] mask of Eq. 2: 1 if q or k is a proxy, or q and k lie in the same frame."""
    M, T, N = num_proxies, num_frames, patches_per_frame
    frame = torch.cat([torch.full((M,), -1), torch.arange(T).repeat_interleave(N)])
    is_proxy = frame < 0
    return is_proxy[:, None] | is_proxy[None, :] | (frame[:, None] == frame[None, :])


class Attention(nn.Module):
    """Fused-QKV multi-head attention; the pattern is passed per call."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pattern: AttentionPattern) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x[B,h,L,d]
        out = pattern.attend(q, k, v)  # [B, h, L, d]
        return self.proj(out.transpose(1, 2).reshape(B, L, D))
