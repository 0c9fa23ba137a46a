"""
DASTSiam discriminative augmentation (DA): template and search features attend to each other.

Before the head, every search position gathers the template's features and every template
position gathers the search region's features (two single-head cross-attentions, computed from
the unmodified inputs), each added as a residual through a per-channel gate initialised to
zero, so an untrained module passes both feature maps through unchanged.

Export: DA sits between the backbone and the head, so it lives in the search graph (the
template-side update depends on the search features). The search graph keeps its inputs
(``search`` + ``zf``) and gains LayerNormalization, MatMul and Softmax nodes with constant
weights; no convolution, so the runtime-weight-Conv inspection is unaffected.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .attention import CrossAttention, from_tokens, to_tokens


class DAAttention(nn.Module):
    """Mutual template <-> search cross-attention with zero-initialised residual gates."""

    def __init__(self, channels: int, dim: int = 32):
        super().__init__()
        self.search_from_template = CrossAttention(channels, dim)
        self.template_from_search = CrossAttention(channels, dim)
        self.search_gate = nn.Parameter(torch.zeros(channels))
        self.template_gate = nn.Parameter(torch.zeros(channels))

    def forward(self, zf: torch.Tensor,
                xf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template (B, C, h, w) and search (B, C, H, W) features -> both, augmented."""
        if zf.dim() != 4 or xf.dim() != 4 or zf.shape[:2] != xf.shape[:2]:
            raise ValueError(f'DAAttention needs (B, C, h, w) template and (B, C, H, W) '
                             f'search features; got {tuple(zf.shape)} and {tuple(xf.shape)}')
        c = int(zf.shape[1])
        zt, xt = to_tokens(zf), to_tokens(xf)
        x_add = from_tokens(self.search_from_template(xt, zt), int(xf.shape[2]),
                            int(xf.shape[3]))
        z_add = from_tokens(self.template_from_search(zt, xt), int(zf.shape[2]),
                            int(zf.shape[3]))
        return (zf + self.template_gate.reshape(1, c, 1, 1) * z_add,
                xf + self.search_gate.reshape(1, c, 1, 1) * x_add)
