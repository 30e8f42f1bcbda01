"""Vision towers: the Video Proxy ViT (paper Sec. 4.2) and the ablation baselines of Table 2.

Shapes: B videos, T frames, N = (H/p)*(W/p) patches per frame, M proxies, W ViT width, E embedding width.

- ``vip``: [M proxies ; T*N patches] in one ViT with proxy-guided attention (Eq. 2); video = proj(ln_post(proxy 0)).
- ``fullattn``: the same tokens with unrestricted attention (the "Full Attention" row of Table 2).
- ``meanpool``: CLIP on each frame, per-frame embeddings L2-normalised, averaged, re-normalised (CLIP4Clip meanP).
- ``seqtransf``: CLIP4Clip's seqTransf: a small transformer over frame embeddings + frame positions, with a
  residual to its input, then the meanpool reduction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipvip.config import ModelConfig
from clipvip.model.layers import FullAttention, ProxyGuidedAttention, Transformer


def interpolate_temporal(table: Tensor, num_frames: int) -> Tensor:
    """[T0, W] -> [T, W] by linear interpolation (``align_corners=False``, as the CLIP-ViP release does).

    A single frame (T=1) lands on the middle of the table: the mean of rows T0/2-1 and T0/2 for even T0.
    """
    if table.shape[0] == num_frames:
        return table
    return F.interpolate(table.T[None], size=num_frames, mode="linear", align_corners=False)[0].T


class SeqTransformerHead(nn.Module):
    """CLIP4Clip's seqTransf temporal head over per-frame embeddings [B, T, E] -> [B, T, E]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        E = cfg.embed_dim
        self.frame_position_embeddings = nn.Parameter(torch.zeros(cfg.seq_max_frames, E))
        # CLIP4Clip copies the first text blocks into this head, so it shares the text tower's head count.
        heads = cfg.text.heads if E == cfg.text.width else max(E // 64, 1)
        self.transformer = Transformer(E, cfg.seq_layers, heads, cfg.text.mlp_ratio, cfg.act, cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        if T > self.frame_position_embeddings.shape[0]:
            raise ValueError(f"seqtransf supports at most {self.frame_position_embeddings.shape[0]} frames, got {T}")
        h = self.transformer(x + self.frame_position_embeddings[:T], FullAttention())
        return h + x


class VisionTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        v = cfg.vision
        self.variant = cfg.variant
        self.patch_size = v.patch_size
        self.conv1 = nn.Conv2d(3, v.width, kernel_size=v.patch_size, stride=v.patch_size, bias=False)
        scale = v.width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(v.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(v.num_patches + 1, v.width))
        if cfg.variant in ("vip", "fullattn"):
            # Paper Sec. 4.2: M-1 added proxies (CLIP's CLS is proxy 0) and a learned temporal table [T0, W].
            self.added_proxies = nn.Parameter(scale * torch.randn(cfg.num_proxies - 1, v.width))
            self.temporal_embedding = nn.Parameter(torch.zeros(cfg.temporal_size, v.width))
        self.ln_pre = nn.LayerNorm(v.width, eps=cfg.layer_norm_eps)
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, cfg.act, cfg.layer_norm_eps)
        self.ln_post = nn.LayerNorm(v.width, eps=cfg.layer_norm_eps)
        self.proj = nn.Parameter(scale * torch.randn(v.width, cfg.embed_dim))
        if cfg.variant == "seqtransf":
            self.seq_head = SeqTransformerHead(cfg)

    @property
    def num_proxies(self) -> int:
        return 1 + (self.added_proxies.shape[0] if hasattr(self, "added_proxies") else 0)

    def patch_embed(self, x: Tensor) -> Tensor:
        """[B, T, 3, H, W] -> [B, T, N, W] with spatial positions added."""
        B, T, C, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"frame size {H}x{W} is not a multiple of the patch size {self.patch_size}")
        P = self.patch_size
        # conv1 (kernel = stride = P) applied as the GEMM it is: cut the frames into non-overlapping P x P patches
        # and multiply by the flattened kernel. Same numbers, and on CPU oneDNN's convolution ran this shape at
        # about half the GEMM rate (fp32 77 -> 59 ms, bf16 38 -> 19 ms for 48 frames). conv1 keeps CLIP's weight
        # layout [W, 3, P, P] and name, so checkpoints load unchanged.
        patches = x.reshape(B * T, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # [B*T, h, w, C, P, P]
        p = F.linear(patches.flatten(3).flatten(1, 2), self.conv1.weight.flatten(1))  # [B*T, N, W]
        if p.shape[1] + 1 != self.positional_embedding.shape[0]:
            raise ValueError(
                f"{H}x{W} frames give {p.shape[1]} patches; the model was built for "
                f"{self.positional_embedding.shape[0] - 1}"
            )
        return (p + self.positional_embedding[1:]).reshape(B, T, -1, p.shape[-1])

    def pool(self, tokens: Tensor) -> Tensor:
        """proj(ln_post(token 0)): [B, L, W] -> [B, E]."""
        return self.ln_post(tokens[:, 0]) @ self.proj

    def encode_frames(self, x: Tensor) -> Tensor:
        """Plain CLIP on every frame independently: [B, T, 3, H, W] -> [B, T, E] (unnormalised)."""
        B, T = x.shape[:2]
        p = self.patch_embed(x).flatten(0, 1)  # [B*T, N, W]
        cls = (self.class_embedding + self.positional_embedding[0]).expand(p.shape[0], 1, -1)
        h = self.ln_pre(torch.cat([cls, p], dim=1))
        h = self.transformer(h, FullAttention())
        return self.pool(h).reshape(B, T, -1)

    def encode_proxy(self, x: Tensor) -> Tensor:
        """Video Proxy ViT: [B, T, 3, H, W] -> [B, E] (unnormalised)."""
        B, T = x.shape[:2]
        p = self.patch_embed(x)  # [B, T, N, W]
        N = p.shape[2]
        p = p + interpolate_temporal(self.temporal_embedding, T)[None, :, None, :]
        proxies = torch.cat([self.class_embedding[None], self.added_proxies]) + self.positional_embedding[0]
        M = proxies.shape[0]
        h = torch.cat([proxies.expand(B, M, -1), p.reshape(B, T * N, -1)], dim=1)  # [B, M+T*N, W]
        h = self.ln_pre(h)
        pattern = ProxyGuidedAttention(M, T, N) if self.variant == "vip" else FullAttention()
        h = self.transformer(h, pattern)
        return self.pool(h)

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, 3, H, W] CLIP-normalised frames -> L2-normalised [B, E]."""
        if x.ndim != 5:
            raise ValueError(f"expected video [B, T, 3, H, W], got shape {tuple(x.shape)}")
        if self.variant in ("vip", "fullattn"):
            return F.normalize(self.encode_proxy(x), dim=-1)
        frames = self.encode_frames(x)  # [B, T, E]
        if self.variant == "seqtransf":
            frames = self.seq_head(frames)
        return F.normalize(F.normalize(frames, dim=-1).mean(dim=1), dim=-1)
