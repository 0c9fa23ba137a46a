"""
SiamMargin margin supervision: the target must outscore every background location by a margin.

A loss term added to the usual classification and regression losses (no parameters). It acts on
the score map the tracker ranks: NanoTrack's head turns the correlations (pixel-wise, and for v3
also depthwise) into ``cls`` logits, and the target score at a location is
``softmax(cls)[:, 1]``, in 0..1, so ``margin`` is in those units. For each pair that contains
the target, with ``s_t`` the mean score over its positive locations::

    loss = mean over background locations b of relu(margin - (s_t - s_b))

averaged over those pairs. Background is where ``cls_label == 0``; ignored locations (-1) and
pairs without positives (negative pairs) do not count. The hinge is zero once the target leads
every background location by ``margin``.
"""
from __future__ import annotations

import torch


def margin_loss(cls: torch.Tensor, cls_label: torch.Tensor, margin: float) -> torch.Tensor:
    """
    Margin ranking loss of the target over the background on a score map.

    :param cls: (B, 2, S, S) logits as the NanoTrack head returns them.
    :param cls_label: (B, S, S) with 1 positive, 0 negative (background), -1 ignore.
    :param margin: how far (in softmax score) the target must lead each background location.
    :return: a scalar; 0 (still connected to ``cls``) when no pair has positives.
    """
    if cls.dim() != 4 or cls.shape[1] != 2 or tuple(cls_label.shape) != (
            cls.shape[0], cls.shape[2], cls.shape[3]):
        raise ValueError(f'margin_loss needs cls (B, 2, S, S) and cls_label (B, S, S); got '
                         f'{tuple(cls.shape)} and {tuple(cls_label.shape)}')
    score = torch.softmax(cls, dim=1)[:, 1].flatten(1)               # (B, S*S)
    label = cls_label.flatten(1)
    pos = (label == 1).to(score.dtype)
    bg = (label == 0).to(score.dtype)
    n_pos = pos.sum(1)
    n_bg = bg.sum(1)
    valid = (n_pos > 0) & (n_bg > 0)
    if not bool(valid.any()):
        return cls.sum() * 0.0
    target = (score * pos).sum(1) / n_pos.clamp(min=1)               # (B,)
    hinge = torch.relu(margin - (target[:, None] - score)) * bg
    per_pair = hinge.sum(1) / n_bg.clamp(min=1)
    return per_pair[valid].mean()
