"""
SiamRPN++ layer-wise aggregation of multi-level backbone features, for the NanoTrack backbone.

SiamRPN++ feeds several backbone stages to the head and combines them with learned weights.
NanoTrack's truncated MobileNetV3 has one stride-8 stage and stride-16 stages of growing
width; the last layer of each earlier stage (by default: the end of the stride-8 stage, and
the end of each earlier stride-16 width) is brought to the output's size (average pooling by
the stride ratio, 2 for the stride-8 level) and channels (1x1 conv + BN), and added with a
learned weight per level::

    out = final + sum_i weight_i * proj_i(pool(level_i))

The weights start at zero, so the untrained module returns the backbone's own output.

Export: the aggregation is part of feature extraction, so it goes into both the template and
the search graph (the template and search backbones); the graphs keep their inputs and outputs
and gain constant-weight 1x1 Convs (BN folds into them), AveragePool and Add
(``nets.module_export`` exports both from ``TrainNet.features``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.functional import avg_pool2d


def layer_channels(layer: nn.Module) -> int:
    """Output channels of one ``backbone.features`` layer (the last BatchNorm in it)."""
    bns = [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ValueError(f'cannot tell the output channels of {type(layer).__name__}')
    return int(bns[-1].num_features)


def default_levels(features: nn.Sequential) -> Tuple[int, ...]:
    """
    Return the indices of the layers to aggregate: the last of each width group but the final.

    Only layers at stride >= 8 count (NanoTrack: index 3, the end of the stride-8 stage, then
    the last 40- and 48-channel layers of v3, or the last 40-channel layer of v1/v2).
    """
    channels = [layer_channels(layer) for layer in features]
    strides, total = [], 1
    for layer in features:
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        total *= max(int(m.stride[0]) for m in convs)
        strides.append(total)
    last = len(features) - 1
    return tuple(i for i in range(last) if strides[i] >= 8 and channels[i] != channels[i + 1]
                 and channels[i] != channels[last])


def backbone_levels(features: nn.Sequential, x: torch.Tensor,
                    levels: Sequence[int]) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Run ``features`` layer by layer; return (outputs at ``levels``, final output)."""
    wanted = set(levels)
    out: List[torch.Tensor] = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in wanted:
            out.append(x)
    return out, x


class LayerAggregation(nn.Module):
    """Learned weighted sum of multi-level backbone features (zero-initialised weights)."""

    def __init__(self, features: nn.Sequential, levels: Optional[Sequence[int]] = None):
        super().__init__()
        self.levels = tuple(default_levels(features) if levels is None else levels)
        if not self.levels:
            raise ValueError('LayerAggregation needs at least one level to aggregate')
        out_channels = layer_channels(features[len(features) - 1])
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(layer_channels(features[i]), out_channels, 1),
                          nn.BatchNorm2d(out_channels)) for i in self.levels)
        self.weight = nn.Parameter(torch.zeros(len(self.levels)))

    def forward(self, levels: Sequence[torch.Tensor], final: torch.Tensor) -> torch.Tensor:
        """Level outputs (as ``backbone_levels`` returns them) + final output -> aggregated."""
        if len(levels) != len(self.proj):
            raise ValueError(f'LayerAggregation expects {len(self.proj)} levels, got '
                             f'{len(levels)}')
        out = final
        size = int(final.shape[-1])
        for i, (level, proj) in enumerate(zip(levels, self.proj)):
            factor = math.ceil(int(level.shape[-1]) / size)
            if factor > 1:
                level = avg_pool2d(level, factor, factor, ceil_mode=True)
            out = out + self.weight[i] * proj(level)
        return out

    def extract(self, features: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """Pixels -> aggregated features, running the backbone ``features`` once."""
        levels, final = backbone_levels(features, x, self.levels)
        return self(levels, final)
