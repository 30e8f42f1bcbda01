"""CLIP's pre-LN residual transformer (shared by the text tower, the ViT and the seqTransf head)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clipvip.model.layers.attention import Attention, AttentionPattern


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    alpha = 1.702

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.alpha * x)


def make_act(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: str, eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), act)

    def forward(self, x: Tensor, pattern: AttentionPattern) -> Tensor:
        x = x + self.attn(self.ln_1(x), pattern)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(dim, heads, mlp_ratio, act, eps) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: Tensor, pattern: AttentionPattern) -> Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # Recompute activations in backward: memory O(layers) -> O(1) blocks, same numbers.
                x = checkpoint(block, x, pattern, use_reentrant=False)
            else:
                x = block(x, pattern)
        return x
