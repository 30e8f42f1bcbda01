"""Building blocks, one concept per file: attention patterns and the pre-LN residual transformer."""

from clipvip.model.layers.attention import (
    Attention,
    AttentionPattern,
    CausalAttention,
    FullAttention,
    MaskedAttention,
    ProxyGuidedAttention,
    proxy_guided_mask,
)
from clipvip.model.layers.transformer import MLP, QuickGELU, ResidualBlock, Transformer

__all__ = [
    "MLP",
    "Attention",
    "AttentionPattern",
    "CausalAttention",
    "FullAttention",
    "MaskedAttention",
    "ProxyGuidedAttention",
    "QuickGELU",
    "ResidualBlock",
    "Transformer",
    "proxy_guided_mask",
]
