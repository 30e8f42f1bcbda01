"""CLIP's text tower: causal transformer, pooled at the EOT token, final LN, projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipvip.config import ModelConfig
from clipvip.model.layers import CausalAttention, Transformer


class TextTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        t = cfg.text
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, cfg.act, cfg.layer_norm_eps)
        self.ln_final = nn.LayerNorm(t.width, eps=cfg.layer_norm_eps)
        self.text_projection = nn.Parameter(t.width**-0.5 * torch.randn(t.width, cfg.embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        """ids [B, L] (SOT ... EOT, zero padded) -> L2-normalised [B, E]."""
        if ids.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(
                f"text length {ids.shape[1]} exceeds the model's {self.positional_embedding.shape[0]} positions"
            )
        # EOT has the largest id in CLIP's vocabulary, so argmax finds it (OpenAI's pooling rule).
        eot = ids.argmax(dim=-1)  # [B]
        # Cut the batch after its last EOT. Exact: attention is causal and the embedding is read at EOT, so the
        # padding never reaches it; it only costs compute (captions of ~10 tokens padded to 70: 3.4x the time).
        ids = ids[:, : int(eot.max()) + 1]
        L = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:L]  # [B, L, W]
        x = self.ln_final(self.transformer(x, CausalAttention()))
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return F.normalize(x, dim=-1)
