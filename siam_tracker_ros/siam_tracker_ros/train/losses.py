"""
The base losses of NanoTrack / SiamBAN and SiamRPN++ training (upstream's ``select_*`` losses).

* classification: cross-entropy over the 2-channel logits (channel 1 = target), averaged over
  the positive points and over the negative points separately and weighted 0.5 / 0.5 (pysot's
  ``select_cross_entropy_loss``); label -1 is ignored;
* regression: an IoU loss between the predicted and the target (l, t, r, b) distances at the
  points where ``reg_weight`` > 0: ``iou`` = -log IoU (SiamBAN / NanoTrack), ``linear_iou`` =
  1 - IoU, ``giou`` = 1 - generalised IoU; IoU uses upstream's +1 smoothing.

An anchor head (SiamRPN++, ``anchor_losses``) has K anchors per point: its (B, 2K, S, S) logits
are read as pysot lays them out, [2, K] (background first), for the same balanced
cross-entropy over (B, K, S, S) labels, and its (B, 4K, S, S) deltas, [4, K], get pysot's
``weight_l1_loss``: the L1 distance of the 4 deltas, times ``reg_weight`` (1 / positives of
the pair), summed and divided by the batch size, weighted by ``loc_weight``.

Both are computed in float32 whatever the autocast precision of the network outputs.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from .config import LossConfig


def cls_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Balanced cross-entropy of (B, 2, ...) logits against (B, ...) labels in {1, 0, -1}."""
    logp = F.log_softmax(logits.float(), dim=1)
    total = logp.new_zeros(())
    for value, channel in ((1.0, 1), (0.0, 0)):
        mask = labels == value
        if bool(mask.any()):
            total = total - 0.5 * logp[:, channel][mask].mean()
    return total


def iou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
             kind: str = 'iou') -> torch.Tensor:
    """IoU-type loss of (B, 4, S, S) l, t, r, b distances where ``weight`` (B, S, S) > 0."""
    mask = weight > 0
    if not bool(mask.any()):
        return pred.float().sum() * 0.0
    p = pred.float().permute(0, 2, 3, 1)[mask]
    t = target.float().permute(0, 2, 3, 1)[mask]
    w = weight.float()[mask]
    pl, pt, pr, pb = p.unbind(1)
    tl, tt, tr, tb = t.unbind(1)
    area_p = (pl + pr) * (pt + pb)
    area_t = (tl + tr) * (tt + tb)
    inter = ((torch.min(pl, tl) + torch.min(pr, tr))
             * (torch.min(pt, tt) + torch.min(pb, tb)))
    union = area_p + area_t - inter
    iou = (inter + 1.0) / (union + 1.0)
    if kind == 'iou':
        losses = -torch.log(iou)
    elif kind == 'linear_iou':
        losses = 1.0 - iou
    elif kind == 'giou':
        enclose = ((torch.max(pl, tl) + torch.max(pr, tr))
                   * (torch.max(pt, tt) + torch.max(pb, tb))) + 1e-7
        losses = 1.0 - (iou - (enclose - union) / enclose)
    else:
        raise ValueError(f'unknown IoU loss {kind!r}; choose iou, linear_iou or giou')
    return (losses * w).sum() / w.sum()


def base_losses(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                config: LossConfig) -> Dict[str, torch.Tensor]:
    """Return the weighted base terms {'cls', 'reg'} of one batch."""
    return {
        'cls': config.cls_weight * cls_loss(out['cls'], batch['cls_label']),
        'reg': config.reg_weight * iou_loss(out['reg'], batch['reg_target'],
                                            batch['reg_weight'], config.iou),
    }


def delta_l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """
    Return pysot's weight_l1_loss of (B, 4K, S, S) deltas against (B, 4, K, S, S) targets.

    ``weight`` (B, K, S, S) is 1 / positives on a pair's positive anchors, 0 elsewhere.
    """
    b, _, k, h, w = target.shape
    diff = (pred.float().view(b, 4, k, h, w) - target.float()).abs().sum(dim=1)
    return (diff * weight.float()).sum() / b


def anchor_losses(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                  config: LossConfig) -> Dict[str, torch.Tensor]:
    """Return the weighted base terms {'cls', 'reg'} of one batch of an anchor head."""
    labels = batch['cls_label']
    b, k, h, w = labels.shape
    return {
        'cls': config.cls_weight * cls_loss(out['cls'].view(b, 2, k, h, w), labels),
        'reg': config.loc_weight * delta_l1_loss(out['reg'], batch['reg_target'],
                                                 batch['reg_weight']),
    }
