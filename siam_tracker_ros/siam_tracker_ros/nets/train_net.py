"""
NanoTrack wrapped for training, with the seed papers' learned modules as options.

``LearnedModules`` says which modules a ``TrainNet`` has; every one is off by default, and with
every one off ``TrainNet(base)(templates[:, :1], searches[:, -1:])`` is bit-identical to
``base(templates[:, 0], searches[:, -1])``. Each module starts as the identity (zero-initialised
gates), so a pre-trained base keeps its outputs when a module is switched on, until training
moves it. Where the modules sit (see ``nets.modules`` for each, and how it exports):

* template features: backbone (+ ``layer_aggregation``) of ``templates[:, 0]``, then
  ``st_fusion`` with the later templates ``templates[:, 1:]`` as the memory;
* search features: backbone (+ ``layer_aggregation``) of ``searches[:, -1]`` (frame t), then
  ``tafa`` with the earlier crops ``searches[:, :-1]`` (t-2, t-1), then
  ``feature_modulation``, then ``da_attention`` on both;
* the base head gives ``cls`` and ``reg``; ``margin_weight`` adds the SiamMargin loss and
  ``adv_dropout_weight`` the adversarial-dropout KL term (``extra_losses``).

``RPNTrainNet`` wraps a SiamRPN++ net (``nets.siamrpn``, pysot's parameter names) the same
way, without learned modules: the modules are built for NanoTrack's single-level features and
point head (see ``RPNTrainNet``).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .modules.da_attention import DAAttention
from .modules.layer_aggregation import LayerAggregation
from .modules.margin import margin_loss
from .modules.st_fusion import STFusion
from .modules.tafa import (adversarial_channel_mask, FeatureModulation, kl_divergence,
                           TemporalShift)
from .nanotrack import NanoTrack
from .siamrpn import SiamRPNpp


@dataclass(frozen=True)
class LearnedModules:
    """
    Which learned modules a ``TrainNet`` has; every one is off by default.

    :param margin_weight: weight of the SiamMargin margin loss on the score map (0 = off).
    :param margin: the margin, in softmax target score (0..1).
    :param st_fusion: DASTSiam spatio-temporal template fusion (cross-attention, initial
        template as anchor).
    :param st_memory: history slots the fusion sees at inference (the templates besides the
        initial one that training feeds: H = 1 + st_memory).
    :param da_attention: DASTSiam discriminative augmentation (template <-> search attention).
    :param tafa: TAFA causal channel shift (frames t-1 and t-2; training feeds F = 3 crops).
    :param tafa_channels: K, the channels taken from each neighbour.
    :param feature_modulation: TAFA feature modulation (template-conditioned FiLM).
    :param adv_dropout_weight: weight of TAFA's adversarial-dropout KL term (0 = off).
    :param adv_dropout_budget: fraction of channels the adversarial mask may drop (and flip).
    :param layer_aggregation: SiamRPN++ layer-wise aggregation of multi-level features.
    """

    margin_weight: float = 0.0
    margin: float = 0.5
    st_fusion: bool = False
    st_memory: int = 3
    da_attention: bool = False
    tafa: bool = False
    tafa_channels: int = 8
    feature_modulation: bool = False
    adv_dropout_weight: float = 0.0
    adv_dropout_budget: float = 0.1
    layer_aggregation: bool = False

    def __post_init__(self) -> None:
        """Reject values no module can use, naming the field."""
        for name in ('margin_weight', 'margin', 'adv_dropout_weight'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'LearnedModules.{name} must be a finite number >= 0, '
                                 f'got {value!r}')
        if not isinstance(self.st_memory, int) or self.st_memory < 1:
            raise ValueError(f'LearnedModules.st_memory must be an int >= 1, got '
                             f'{self.st_memory!r}')
        if not isinstance(self.tafa_channels, int) or self.tafa_channels < 1:
            raise ValueError(f'LearnedModules.tafa_channels must be an int >= 1, got '
                             f'{self.tafa_channels!r}')
        if not 0.0 < float(self.adv_dropout_budget) < 1.0:
            raise ValueError(f'LearnedModules.adv_dropout_budget must be in (0, 1), got '
                             f'{self.adv_dropout_budget!r}')

    @property
    def any_on(self) -> bool:
        """Whether any module is switched on."""
        return bool(self.margin_weight > 0 or self.st_fusion or self.da_attention or self.tafa
                    or self.feature_modulation or self.adv_dropout_weight > 0
                    or self.layer_aggregation)


def cls_output_layer(head: nn.Module) -> nn.Module:
    """Return the head's final classification layer (whose input adversarial dropout masks)."""
    for name in ('cls_logits', 'cls_pred'):
        layer = getattr(head, name, None)
        if isinstance(layer, nn.Module):
            return layer
    raise ValueError(f'{type(head).__name__} has no cls_logits/cls_pred layer')


class TrainNet(nn.Module):
    """
    A NanoTrack net plus the enabled learned modules (attributes are None when off).

    Parameters are ``base.*`` (the NanoTrack names, so ``base.state_dict()`` stays a
    NanoTrack checkpoint) and ``st_fusion.*``, ``da_attention.*``, ``tafa.*``,
    ``feature_modulation.*``, ``layer_aggregation.*`` for the modules switched on.
    """

    template_size = 8  # template feature side for a 127 crop at stride 16

    def __init__(self, base: NanoTrack, modules: LearnedModules = LearnedModules()):
        super().__init__()
        if not isinstance(base, NanoTrack):
            raise TypeError(f'TrainNet wraps a nets.nanotrack.NanoTrack, got '
                            f'{type(base).__name__}')
        self.base = base
        self.config = modules
        channels = int(base.backbone.out_channels)
        side = self.template_size
        self.layer_aggregation: Optional[LayerAggregation] = (
            LayerAggregation(base.backbone.features) if modules.layer_aggregation else None)
        self.st_fusion: Optional[STFusion] = (
            STFusion(channels, (side, side)) if modules.st_fusion else None)
        self.tafa: Optional[TemporalShift] = (
            TemporalShift(channels, modules.tafa_channels) if modules.tafa else None)
        self.feature_modulation: Optional[FeatureModulation] = (
            FeatureModulation(channels) if modules.feature_modulation else None)
        self.da_attention: Optional[DAAttention] = (
            DAAttention(channels) if modules.da_attention else None)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """Compute backbone features of (N, 3, Z, Z) crops (aggregated with layer_aggregation)."""
        if self.layer_aggregation is None:
            return self.base.backbone(crops)
        return self.layer_aggregation.extract(self.base.backbone.features, crops)

    def _frames(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, Z, Z) crops -> (B, K, C, z, z) features, one backbone call."""
        b, k = int(crops.shape[0]), int(crops.shape[1])
        f = self.features(crops.reshape(b * k, *crops.shape[2:]))
        return f.reshape(b, k, *f.shape[1:])

    def template_features(self, templates: torch.Tensor) -> torch.Tensor:
        """(B, H, 3, 127, 127) -> the template features the head sees (fused when ST is on)."""
        zf = self.features(templates[:, 0])
        if self.st_fusion is None:
            return zf
        memory = (self._frames(templates[:, 1:]) if templates.shape[1] > 1
                  else zf[:, None])
        return self.st_fusion(zf, memory)

    def forward(self, templates: torch.Tensor,
                searches: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Run the net on a batch of template and search crop sequences.

        :param templates: (B, H, 3, 127, 127) template crops; index 0 is the initial
            template's frame, 1.. later frames of the same target (oldest first). H = 1 is
            allowed; later templates are used only by ST fusion (with none, the memory is the
            initial template itself).
        :param searches: (B, F, 3, 255, 255) consecutive search crops, the last one frame t
            (the one with labels). Earlier ones are used only by TAFA.
        :return: 'cls' (B, 2, S, S) logits and 'reg' (B, 4, S, S) as the base head returns
            them; 'zf' and 'xf', the features the head saw; in training mode with the
            adversarial dropout on, also 'cls_adv' (the logits under the adversarial mask).
        """
        if templates.dim() != 5 or searches.dim() != 5 or templates.shape[1] < 1 \
                or searches.shape[1] < 1 or templates.shape[0] != searches.shape[0]:
            raise ValueError(f'TrainNet needs templates (B, H, 3, Z, Z) and searches '
                             f'(B, F, 3, X, X) with H, F >= 1; got {tuple(templates.shape)} '
                             f'and {tuple(searches.shape)}')
        zf = self.template_features(templates)
        xf = self.features(searches[:, -1])
        if self.tafa is not None:
            previous = self._frames(searches[:, :-1]) if searches.shape[1] > 1 else None
            xf = self.tafa(xf, previous)
        if self.feature_modulation is not None:
            xf = self.feature_modulation(zf, xf)
        if self.da_attention is not None:
            zf, xf = self.da_attention(zf, xf)
        head = self.base.ban_head
        adversarial = self.config.adv_dropout_weight > 0 and self.training
        captured: List[torch.Tensor] = []
        if adversarial:
            layer = cls_output_layer(head)
            handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
            try:
                cls, reg = head(zf, xf)
            finally:
                handle.remove()
        else:
            cls, reg = head(zf, xf)
        out = {'cls': cls, 'reg': reg, 'zf': zf, 'xf': xf}
        if adversarial:
            feats = captured[-1]
            mask = adversarial_channel_mask(layer, feats, cls, self.config.adv_dropout_budget)
            out['cls_adv'] = layer(feats * mask)
        return out

    def extra_losses(self, out: Dict[str, torch.Tensor],
                     batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        Named extra loss terms, already weighted; empty when every module is off.

        'margin' (``margin_weight`` > 0; needs ``batch['cls_label']``) and 'adv_kl'
        (``adv_dropout_weight`` > 0, when ``out`` holds 'cls_adv', i.e. in training mode).
        """
        losses: Dict[str, torch.Tensor] = {}
        cfg = self.config
        if cfg.margin_weight > 0:
            if 'cls_label' not in batch:
                raise KeyError("the margin loss needs batch['cls_label'] (B, S, S)")
            losses['margin'] = cfg.margin_weight * margin_loss(out['cls'], batch['cls_label'],
                                                               cfg.margin)
        if cfg.adv_dropout_weight > 0 and 'cls_adv' in out:
            losses['adv_kl'] = cfg.adv_dropout_weight * kl_divergence(out['cls'].detach(),
                                                                      out['cls_adv'])
        return losses


class RPNTrainNet(nn.Module):
    """
    A SiamRPN++ net for training: the same interface as ``TrainNet``, no learned modules.

    ``base.state_dict()`` keeps pysot's names (backbone.*, neck.*, rpn_head.*). The forward
    is pysot's (grouped-convolution correlation, all feature levels); the learned modules are
    NanoTrack only (they act on one feature map, the point head's logits or its last
    classification layer), so any switched on is refused.
    """

    def __init__(self, base: SiamRPNpp, modules: LearnedModules = LearnedModules()):
        super().__init__()
        if not isinstance(base, SiamRPNpp):
            raise TypeError(f'RPNTrainNet wraps a nets.siamrpn.SiamRPNpp, got '
                            f'{type(base).__name__}')
        if modules.any_on:
            raise ValueError(f'the learned modules are NanoTrack only; {base.arch} trains '
                             f'without them (switched on: {", ".join(modules_on(modules))})')
        self.base = base
        self.config = modules

    def forward(self, templates: torch.Tensor,
                searches: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Run the net on ``templates[:, 0]`` and ``searches[:, -1]`` (see ``TrainNet.forward``).

        :return: 'cls' (B, 2K, S, S) logits and 'reg' (B, 4K, S, S) deltas, pysot's layout.
        """
        if templates.dim() != 5 or searches.dim() != 5 or templates.shape[0] != \
                searches.shape[0]:
            raise ValueError(f'RPNTrainNet needs templates (B, H, 3, Z, Z) and searches '
                             f'(B, F, 3, X, X); got {tuple(templates.shape)} and '
                             f'{tuple(searches.shape)}')
        cls, reg = self.base(templates[:, 0], searches[:, -1])
        return {'cls': cls, 'reg': reg}

    def extra_losses(self, out: Dict[str, torch.Tensor],
                     batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Return no extra terms (no learned modules)."""
        return {}


def modules_on(modules: LearnedModules) -> List[str]:
    """Return the names of the learned modules switched on (their LearnedModules fields)."""
    flags = ('st_fusion', 'da_attention', 'tafa', 'feature_modulation', 'layer_aggregation')
    weights = ('margin_weight', 'adv_dropout_weight')
    return ([n for n in weights if getattr(modules, n) > 0]
            + [n for n in flags if getattr(modules, n)])
