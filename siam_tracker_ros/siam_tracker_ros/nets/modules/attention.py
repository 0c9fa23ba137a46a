"""Single-head cross-attention over feature-map tokens (MatMul + Softmax when exported)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) feature map -> (B, h * w, C) tokens, row-major positions."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, h * w, C) tokens -> (B, C, h, w) feature map (inverse of ``to_tokens``)."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, height, width)


class CrossAttention(nn.Module):
    """
    Scaled dot-product attention of query tokens over key/value tokens, one head.

    Both inputs are layer-normalised; optional additive embeddings (positions, slot tags) are
    added after the norm to the query and to the keys (never to the values). The result is
    projected back to ``channels``. Exported, it is LayerNormalization, MatMul (constant
    weights), Softmax and Add: no convolution at all.
    """

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, dim)
        self.k = nn.Linear(channels, dim)
        self.v = nn.Linear(channels, dim)
        self.out = nn.Linear(dim, channels)
        self.scale = float(dim) ** -0.5

    def forward(self, query: torch.Tensor, memory: torch.Tensor,
                query_embed: Optional[torch.Tensor] = None,
                key_embed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Query (B, Nq, C), memory (B, Nk, C) -> attended values (B, Nq, C)."""
        q_in = self.norm_q(query)
        kv_in = self.norm_kv(memory)
        k_in = kv_in
        if query_embed is not None:
            q_in = q_in + query_embed
        if key_embed is not None:
            k_in = k_in + key_embed
        scores = torch.matmul(self.q(q_in), self.k(k_in).transpose(1, 2)) * self.scale
        return self.out(torch.matmul(torch.softmax(scores, dim=-1), self.v(kv_in)))
