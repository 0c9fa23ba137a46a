"""
TAFA's temporal parts: causal channel shift, feature modulation, adversarial dropout.

``TemporalShift`` aggregates the search features of neighbouring frames by channel shift: of
frame t's channels, the first K are replaced by frame t-1's and the next K by frame t-2's
(causal: online tracking has no frame t+1, so the second neighbour is t-2, not t+1). The
shifted map is mixed by a 1x1 conv and added to frame t's features through a per-channel gate
initialised to zero (a residual shift: the untrained module is the identity). Where a
neighbour does not exist yet (the first frames of a sequence) the nearest available frame
stands in, down to frame t itself.

Export: the shift changes the search graph's interface. It needs the previous frames' search
features as extra inputs, ``xf_prev1`` (frame t-1) and ``xf_prev2`` (frame t-2), each
(1, C, 16, 16), and must output frame t's un-shifted backbone features ``xf`` so the tracker
can hand them back on the next frames (numpy, like the template features). The graph gains
Slice, Concat, a constant-weight 1x1 Conv, Mul and Add.

``FeatureModulation`` conditions the search features on the template (FiLM): a two-layer MLP
on the template's pooled features gives a per-channel scale and shift,
``xf * (1 + gamma) + beta``; its output layer starts at zero, so the untrained module is the
identity. Export: in the search graph (inputs unchanged; GlobalAveragePool, Gemm/MatMul, Mul,
Add).

``adversarial_channel_mask`` and ``kl_divergence`` are the adversarial dropout of the refine
stage (training only, no parameters, nothing to export): the channels entering the
classification output layer are dropped by the mask that, within a budget, most increases the
divergence of the classification output from the clean prediction, found with one gradient
step as in adversarial dropout (Park et al., 2018): start from a random channel-dropout mask
at rate ``budget``; take the gradient of the divergence with respect to the mask; flip the
channels where the first-order gain of flipping is positive, largest gain first, at most
``budget * C`` of them. A KL term between the clean and the adversarial prediction is then
added to the loss.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.nn.functional import adaptive_avg_pool2d, log_softmax


class TemporalShift(nn.Module):
    """Causal residual channel shift: K channels from frame t-1 and K from t-2."""

    def __init__(self, channels: int, shift: int = 8):
        super().__init__()
        if shift < 1 or 2 * shift > channels:
            raise ValueError(f'tafa_channels must be in 1..{channels // 2} for {channels} '
                             f'channels (2 * K are shifted), got {shift}')
        self.channels = int(channels)
        self.shift = int(shift)
        self.fuse = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(channels))

    def shifted(self, current: torch.Tensor, previous: Optional[torch.Tensor]) -> torch.Tensor:
        """Return the channel-shifted map: [t-1 (K) | t-2 (K) | t (C - 2K)]."""
        k = self.shift
        count = 0 if previous is None else int(previous.shape[1])
        prev1 = previous[:, -1] if count >= 1 else current
        prev2 = previous[:, -2] if count >= 2 else prev1
        return torch.cat((prev1[:, :k], prev2[:, k:2 * k], current[:, 2 * k:]), dim=1)

    def forward(self, current: torch.Tensor,
                previous: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Aggregate frame t with its predecessors.

        :param current: frame t's search features (B, C, H, W).
        :param previous: earlier frames' search features (B, P, C, H, W), oldest first (the
            last is t-1, the one before t-2); P = 0 or None means none yet.
        :return: (B, C, H, W).
        """
        if current.dim() != 4 or int(current.shape[1]) != self.channels:
            raise ValueError(f'TemporalShift needs (B, {self.channels}, H, W) features, got '
                             f'{tuple(current.shape)}')
        if previous is not None and (previous.dim() != 5
                                     or tuple(previous.shape[2:]) != tuple(current.shape[1:])):
            raise ValueError(f'TemporalShift: previous frames must be (B, P, C, H, W) like '
                             f'{tuple(current.shape)}; got {tuple(previous.shape)}')
        mixed = self.fuse(self.shifted(current, previous))
        return current + self.gate.reshape(1, -1, 1, 1) * mixed


class FeatureModulation(nn.Module):
    """Template-conditioned per-channel scale and shift of the search features (FiLM)."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
        """Template (B, C, h, w), search (B, C, H, W) features -> modulated search features."""
        if zf.dim() != 4 or xf.dim() != 4 or zf.shape[:2] != xf.shape[:2]:
            raise ValueError(f'FeatureModulation needs (B, C, h, w) and (B, C, H, W) features '
                             f'of the same B, C; got {tuple(zf.shape)} and {tuple(xf.shape)}')
        gamma, beta = self.mlp(adaptive_avg_pool2d(zf, 1).flatten(1)).chunk(2, dim=1)
        return xf * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


def kl_divergence(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Mean KL(softmax(clean) || softmax(other)) over the 2 channels, per location and pair."""
    log_p = log_softmax(clean, dim=1)
    log_q = log_softmax(other, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def adversarial_channel_mask(logits_of: Callable[[torch.Tensor], torch.Tensor],
                             features: torch.Tensor, clean: torch.Tensor, budget: float,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """
    Find, in one step, the channel-dropout mask that most increases the output divergence.

    :param logits_of: maps (masked) features (B, C, H, W) to logits (B, 2, H', W').
    :param features: the features entering ``logits_of`` (B, C, H, W); treated as constants.
    :param clean: the clean logits (treated as constants).
    :param budget: fraction of channels in the random start mask's dropout and the most
        channels the gradient step may flip.
    :param generator: random generator for the start mask (default: torch's global one).
    :return: (B, C, 1, 1) mask of 0/1, no gradient.
    """
    if not 0.0 < budget < 1.0:
        raise ValueError(f'adv_dropout_budget must be in (0, 1), got {budget}')
    b, c = int(features.shape[0]), int(features.shape[1])
    flips = max(1, int(round(budget * c)))
    feats, target = features.detach(), clean.detach()
    rand = torch.rand(b, c, generator=generator, device=features.device
                      ) if generator is not None else torch.rand(b, c, device=features.device)
    start = (rand >= budget).to(features.dtype)
    with torch.enable_grad():
        mask = start.clone().requires_grad_(True)
        div = kl_divergence(target, logits_of(feats * mask[:, :, None, None]))
        grad, = torch.autograd.grad(div, mask)
    gain = grad * (1.0 - 2.0 * start)        # first-order change of the divergence on flipping
    top = torch.topk(gain, flips, dim=1)
    flip = torch.zeros_like(start).scatter_(1, top.indices, (top.values > 0).to(start.dtype))
    return (start + flip - 2.0 * start * flip).reshape(b, c, 1, 1).detach()
