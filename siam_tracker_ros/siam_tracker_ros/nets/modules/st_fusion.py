"""
DASTSiam spatio-temporal (ST) template fusion: historical templates fused into the initial one.

The initial template's features are the anchor: they are the queries, they are among the keys
and values (tagged with a learned anchor embedding), and the result is a residual on them::

    fused = initial + gate * CrossAttention(initial, [initial; memory])

with learned position embeddings shared by every slot (so a position can find itself in the
history) and ``gate`` a per-channel vector initialised to zero: an untrained module returns the
initial template's features unchanged.

At inference it is one small fixed-shape graph, run only when the template is updated:
``zf_initial`` (1, C, h, w) and ``zf_memory`` (1, N, C, h, w), the features of the last N
template crops (oldest first), give the fused ``zf`` (1, C, h, w) that the search graph
consumes. Slots not filled yet hold the initial template's features; with every slot holding
them, the output equals the output for a single copy (all keys are then identical). Export:
``nets.fusion_export``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .attention import CrossAttention, from_tokens, to_tokens


class STFusion(nn.Module):
    """Cross-attention template fusion with the initial template as anchor (zero-gated)."""

    def __init__(self, channels: int, size: Tuple[int, int] = (8, 8), dim: int = 64):
        super().__init__()
        self.channels = int(channels)
        self.size = (int(size[0]), int(size[1]))
        positions = self.size[0] * self.size[1]
        self.attn = CrossAttention(channels, dim)
        self.pos = nn.Parameter(torch.randn(positions, channels) * 0.02)
        self.anchor = nn.Parameter(torch.randn(channels) * 0.02)
        self.gate = nn.Parameter(torch.zeros(channels))

    def forward(self, initial: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """
        Fuse template features.

        :param initial: features of the initial template (B, C, h, w).
        :param memory: features of later templates (B, N, C, h, w), oldest first, N >= 1.
        :return: fused template features (B, C, h, w).
        """
        if initial.dim() != 4 or memory.dim() != 5 or memory.shape[0] != initial.shape[0] \
                or tuple(memory.shape[2:]) != tuple(initial.shape[1:]):
            raise ValueError(f'STFusion needs initial (B, C, h, w) and memory (B, N, C, h, w) '
                             f'of the same B, C, h, w; got {tuple(initial.shape)} and '
                             f'{tuple(memory.shape)}')
        b, c, h, w = (int(s) for s in initial.shape)
        if (c, h, w) != (self.channels, *self.size):
            raise ValueError(f'STFusion was built for ({self.channels}, {self.size[0]}, '
                             f'{self.size[1]}) features, got ({c}, {h}, {w})')
        n = int(memory.shape[1])
        query = to_tokens(initial)                                     # (B, hw, C)
        history = memory.reshape(b, n, c, h * w).transpose(2, 3).reshape(b, n * h * w, c)
        keys = torch.cat((query, history), dim=1)                      # (B, (1 + N) hw, C)
        slot = torch.cat((self.anchor.expand(h * w, c),
                          torch.zeros(n * h * w, c, dtype=self.anchor.dtype,
                                      device=self.anchor.device)), dim=0)
        key_embed = self.pos.repeat(1 + n, 1) + slot
        fused = self.attn(query, keys, self.pos, key_embed)           # (B, hw, C)
        return initial + self.gate.reshape(1, c, 1, 1) * from_tokens(fused, h, w)
