"""Multi-head attention with pluggable attention *patterns*.

A pattern decides which keys each query may see. It is an object, not a string or an optional mask argument, so
every code path is visible at the call site:

- ``FullAttention``: every token sees every token (CLIP ViT, the Full-Attention ablation).
- ``CausalAttention``: CLIP's text tower.
- ``ProxyGuidedAttention``: CLIP-ViP Eq. 2. Proxies see all tokens; a patch sees the proxies and its own frame.
  Computed as two SDPA calls, never materialising a (M+T*N)^2 mask or score matrix.
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
        return F.scaled_dot_product_attention(q, k, v)


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
        # 1) proxies attend to every token: [B, h, M, d]
        out_proxy = F.scaled_dot_product_attention(q[:, :, :M], k, v)

        # 2) patches attend to [proxies ; own frame], batched over (B, T): keys [B*T, h, M+N, d]
        def per_frame(x: Tensor) -> Tensor:  # [B, h, T*N, d] -> [B*T, h, N, d]
            return x.reshape(B, h, T, N, d).transpose(1, 2).reshape(B * T, h, N, d)

        def with_proxies(x: Tensor) -> Tensor:  # -> [B*T, h, M+N, d]
            prox = x[:, :, :M].unsqueeze(1).expand(B, T, h, M, d).reshape(B * T, h, M, d)
            return torch.cat([prox, per_frame(x[:, :, M:])], dim=2)

        out_patch = F.scaled_dot_product_attention(per_frame(q[:, :, M:]), with_proxies(k), with_proxies(v))
        out_patch = out_patch.reshape(B, T, h, N, d).transpose(1, 2).reshape(B, h, T * N, d)
        return torch.cat([out_proxy, out_patch], dim=2)


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
