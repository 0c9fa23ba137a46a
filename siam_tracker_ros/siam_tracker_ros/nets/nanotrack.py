"""
NanoTrack v1, v2 and v3 (HonglinChu/SiamTrackers, Apache-2.0) as PyTorch modules.

The module and parameter names follow the upstream training code, so the published
checkpoints (``nanotrackv{1,2,3}.pth``, a dict with ``state_dict``) load with ``strict=True``:

* ``backbone``: a truncated MobileNetV3-small (``backbone.features.N``), stride 16; 48 output
  channels for v1/v2, 96 for v3 (one more block).
* ``neck``: an ``AdjustLayer`` whose weights are in every checkpoint but which upstream's
  ``ModelBuilder.template``/``track`` never call (the upstream ONNX graphs go straight from the
  backbone to the head). It is kept only so strict loading works; nothing here runs it.
* ``ban_head``: the anchor-free BAN head. v1: one pixel-wise correlation shared by both towers;
  v2: separate pixel-wise correlations for cls and reg, with 1x1 adjust convs; v3: pixel-wise
  plus depthwise correlations concatenated (15x15 maps instead of 16x16).

Input: raw BGR pixel values 0..255 as float32 NCHW, no mean/std. Outputs: ``cls`` (1, 2, S, S)
logits (softmax over the 2 channels, channel 1 = target) and ``reg`` (1, 4, S, S) = exp() of the
predicted distances (l, t, r, b) in units of the stride.

``NanoTrack.split()`` returns the two modules a backend or an ONNX export uses: the template
encoder (template crop -> template features) and the search head (search crop + template
features -> cls, reg). Both share the backbone parameters of the net they came from.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.functional import adaptive_avg_pool2d

from .ops import xcorr_depthwise, xcorr_pixelwise

VERSIONS = (1, 2, 3)

# MobileNetV3-small blocks: kernel, expansion, out channels, squeeze-excite, hard-swish, stride.
_MBV3_SMALL = (
    (3, 1.0, 16, True, False, 2),
    (3, 4.5, 24, False, False, 2),
    (3, 3.67, 24, False, False, 1),
    (5, 4.0, 40, True, True, 2),
    (5, 6.0, 40, True, True, 1),
    (5, 6.0, 40, True, True, 1),
    (5, 3.0, 48, True, True, 1),
    (5, 3.0, 48, True, True, 1),
)
# v3 appends one block (stride 1, so the total stride stays 16).
_MBV3_SMALL_V3 = _MBV3_SMALL + ((5, 6.0, 96, True, True, 1),)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Channel attention of MobileNetV3 (global average -> FC -> ReLU -> FC -> hard sigmoid)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = _make_divisible(channels // reduction, 8)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale every channel of ``x`` by its attention weight."""
        weights = self.fc(adaptive_avg_pool2d(x, 1).flatten(1))
        return x * weights.reshape(weights.shape[0], weights.shape[1], 1, 1)


def _activation(hard_swish: bool) -> nn.Module:
    return nn.Hardswish() if hard_swish else nn.ReLU(inplace=True)


class InvertedResidual(nn.Module):
    """MobileNetV3 block; the layer order inside ``conv`` matches the upstream checkpoints."""

    def __init__(self, inp: int, hidden: int, oup: int, kernel: int, stride: int,
                 use_se: bool, use_hs: bool):
        super().__init__()
        self.identity = stride == 1 and inp == oup
        pad = (kernel - 1) // 2
        dw = nn.Conv2d(hidden, hidden, kernel, stride, pad, groups=hidden, bias=False)
        se = SqueezeExcite(hidden) if use_se else nn.Identity()
        if inp == hidden:
            layers = [dw, nn.BatchNorm2d(hidden), _activation(use_hs), se,
                      nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        else:
            layers = [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                      _activation(use_hs), dw, nn.BatchNorm2d(hidden), se,
                      _activation(use_hs), nn.Conv2d(hidden, oup, 1, bias=False),
                      nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block (with the residual connection where shapes allow)."""
        return x + self.conv(x) if self.identity else self.conv(x)


class MobileNetV3Backbone(nn.Module):
    """Truncated MobileNetV3-small feature extractor (``features`` as in the checkpoints)."""

    def __init__(self, blocks: Sequence[Tuple[int, float, int, bool, bool, int]]):
        super().__init__()
        channels = _make_divisible(16)
        layers: List[nn.Module] = [nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels),
            nn.Hardswish())]
        for kernel, expansion, out, use_se, use_hs, stride in blocks:
            out_channels = _make_divisible(out)
            hidden = _make_divisible(channels * expansion)
            layers.append(InvertedResidual(channels, hidden, out_channels, kernel, stride,
                                           use_se, use_hs))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, C, ceil(H / 16), ceil(W / 16)) features."""
        return self.features(x)


class UnusedNeck(nn.Module):
    """
    Upstream's ``AdjustLayer``: present in the checkpoints, never called at inference.

    Upstream builds it (cfg.ADJUST) but ``ModelBuilder.template``/``track`` go straight from
    the backbone to the head, and the published ONNX graphs agree. Its weights are kept only
    so the checkpoints load strictly; it deliberately has no forward.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False),
                                        nn.BatchNorm2d(channels))


class ChannelAttention(nn.Module):
    """The BAN head's ``CAModule``: x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight the channels of ``x``."""
        w = adaptive_avg_pool2d(x, 1)
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(w))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv (with bias) + BN: the adjust layers in front of each correlation."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))


class PixelwiseCorrelation(nn.Module):
    """
    Pixel-wise correlation + channel attention (+ v2/v3 adjust convs, + v3 reduction).

    With ``adjust`` the template and search features each pass a 1x1 conv + BN first; with
    ``reduce`` (v3) the attended map passes a 2x2 depthwise conv (16x16 -> 15x15), BN, ReLU6,
    1x1 conv, BN.
    """

    def __init__(self, channels: int, positions: int, adjust: bool, reduce: bool):
        super().__init__()
        self.CA_layer = ChannelAttention(positions)  # upstream's name (checkpoint key)
        if adjust:
            self.conv_kernel = _conv_bn(channels, channels)
            self.conv_search = _conv_bn(channels, channels)
        if reduce:
            self.conv = nn.Sequential(
                nn.Conv2d(positions, positions, 2, groups=positions, bias=False),
                nn.BatchNorm2d(positions), nn.ReLU6(inplace=True),
                nn.Conv2d(positions, positions, 1), nn.BatchNorm2d(positions))
        self.adjust = adjust
        self.reduce = reduce

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
        """Template features (B, C, h, w), search features (B, C, H, W) -> (B, h*w, H', W')."""
        if self.adjust:
            zf = self.conv_kernel(zf)
            xf = self.conv_search(xf)
        out = self.CA_layer(xcorr_pixelwise(xf, zf))
        return self.conv(out) if self.reduce else out


class DepthwiseCorrelation(nn.Module):
    """v3's depthwise branch: 1x1 conv + BN on both inputs, then padded depthwise xcorr."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_kernel = _conv_bn(channels, channels)
        self.conv_search = _conv_bn(channels, channels)

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
        """Cropped template (B, C, 4, 4), search (B, C, 16, 16) -> (B, C, 15, 15)."""
        return xcorr_depthwise(self.conv_search(xf), self.conv_kernel(zf), padding=1)


def _separable_tower(layers: Iterable[Tuple[int, int, int]]) -> nn.Sequential:
    """v1/v2 tower: per layer depthwise kxk, pointwise cin->cout, BN, ReLU6."""
    mods: List[nn.Module] = []
    for cin, cout, k in layers:
        mods += [nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
                 nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                 nn.ReLU6(inplace=True)]
    return nn.Sequential(*mods)


def _separable_tower_v3(channels: int, depth: int) -> nn.Sequential:
    """v3 tower: per layer depthwise 3x3, BN, ReLU6, pointwise (linear), BN."""
    mods: List[nn.Module] = []
    for _ in range(depth):
        mods += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                 nn.BatchNorm2d(channels), nn.ReLU6(inplace=True),
                 nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)]
    return nn.Sequential(*mods)


class BanHeadV1(nn.Module):
    """NanoTrack v1 head: one pixel-wise correlation feeds both towers."""

    def __init__(self, channels: int = 48, positions: int = 64):
        super().__init__()
        self.corr_pw = PixelwiseCorrelation(channels, positions, adjust=False, reduce=False)
        self.cls_tower = _separable_tower([(positions, 128, 5), (128, 128, 5), (128, 128, 3)])
        self.bbox_tower = _separable_tower([(positions, 96, 3), (96, 96, 3), (96, 96, 5),
                                            (96, 96, 5)])
        self.cls_logits = nn.Sequential(nn.Conv2d(128, 2, 1))
        self.bbox_pred = nn.Sequential(nn.Conv2d(96, 4, 1))

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template and search features -> (cls logits, exp(reg))."""
        corr = self.corr_pw(zf, xf)
        cls = self.cls_logits(self.cls_tower(corr))
        reg = torch.exp(self.bbox_pred(self.bbox_tower(corr)))
        return cls, reg


class BanHeadV2(nn.Module):
    """NanoTrack v2 head: separate pixel-wise correlations for the cls and reg towers."""

    def __init__(self, channels: int = 48, positions: int = 64, depth: int = 6):
        super().__init__()
        self.corr_pw_reg = PixelwiseCorrelation(channels, positions, adjust=True, reduce=False)
        self.corr_pw_cls = PixelwiseCorrelation(channels, positions, adjust=True, reduce=False)
        spec = [(positions, 96, 3)] + [(96, 96, 3)] * (depth - 1)
        self.cls_pw_tower = _separable_tower(spec)
        self.bbox_pw_tower = _separable_tower(spec)
        self.cls_pred = nn.Sequential(nn.Conv2d(96, 2, 1))
        self.bbox_pred = nn.Sequential(nn.Conv2d(96, 4, 1))

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template and search features -> (cls logits, exp(reg))."""
        cls = self.cls_pred(self.cls_pw_tower(self.corr_pw_cls(zf, xf)))
        reg = torch.exp(self.bbox_pred(self.bbox_pw_tower(self.corr_pw_reg(zf, xf))))
        return cls, reg


class BanHeadV3(nn.Module):
    """NanoTrack v3 head: pixel-wise + depthwise correlations, concatenated, per branch."""

    def __init__(self, channels: int = 96, positions: int = 64, depth: int = 6):
        super().__init__()
        self.corr_dw_reg = DepthwiseCorrelation(channels)
        self.corr_pw_reg = PixelwiseCorrelation(channels, positions, adjust=True, reduce=True)
        self.corr_dw_cls = DepthwiseCorrelation(channels)
        self.corr_pw_cls = PixelwiseCorrelation(channels, positions, adjust=True, reduce=True)
        self.cls_tower = _separable_tower_v3(channels, depth)
        self.bbox_tower = _separable_tower_v3(channels, depth)
        self.cls_logits = nn.Sequential(nn.Conv2d(channels, 2, 1))
        self.bbox_pred = nn.Sequential(nn.Conv2d(channels, 4, 1))
        self.down_reg = nn.Sequential(nn.Conv2d(channels + positions, channels, 1))
        self.down_cls = nn.Sequential(nn.Conv2d(channels + positions, channels, 1))

    @staticmethod
    def center_crop(zf: torch.Tensor) -> torch.Tensor:
        """Central 4x4 of the template features (upstream crops [2:6] when wider than 4)."""
        return zf[:, :, 2:6, 2:6] if zf.shape[3] > 4 else zf

    def forward(self, zf: torch.Tensor, xf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template and search features -> (cls logits, exp(reg)), 15x15 for 8x8/16x16 input."""
        zc = self.center_crop(zf)
        x_reg = self.down_reg(torch.cat((self.corr_pw_reg(zf, xf),
                                         self.corr_dw_reg(zc, xf)), 1))
        x_cls = self.down_cls(torch.cat((self.corr_pw_cls(zf, xf),
                                         self.corr_dw_cls(zc, xf)), 1))
        cls = self.cls_logits(self.cls_tower(x_cls))
        reg = torch.exp(self.bbox_pred(self.bbox_tower(x_reg)))
        return cls, reg


class NanoTrackTemplate(nn.Module):
    """Template encoder: (B, 3, 127, 127) pixels -> template features (B, C, 8, 8)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, template: torch.Tensor) -> torch.Tensor:
        """Encode a template crop."""
        return self.backbone(template)


class NanoTrackSearch(nn.Module):
    """Search head: search crop (B, 3, 255, 255) + template features -> (cls, reg)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.ban_head = head

    def forward(self, search: torch.Tensor,
                zf: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Score a search crop against template features."""
        return self.ban_head(zf, self.backbone(search))


class NanoTrack(nn.Module):
    """A whole NanoTrack net (v1, v2 or v3) with checkpoint-compatible parameter names."""

    exemplar_size = 127
    instance_size = 255
    stride = 16

    def __init__(self, version: int):
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f'NanoTrack version must be one of {VERSIONS}, got {version!r}')
        self.version = version
        if version == 3:
            self.backbone = MobileNetV3Backbone(_MBV3_SMALL_V3)
            self.neck = UnusedNeck(96)
            self.ban_head = BanHeadV3(96)
        else:
            self.backbone = MobileNetV3Backbone(_MBV3_SMALL)
            self.neck = UnusedNeck(64)
            self.ban_head = BanHeadV1(48) if version == 1 else BanHeadV2(48)

    @property
    def arch(self) -> str:
        """Registry name of this net ('nanotrack_v1', ...)."""
        return f'nanotrack_v{self.version}'

    @property
    def score_size(self) -> int:
        """Side of the cls/reg maps for a 255 search crop (16, or 15 for v3)."""
        return 15 if self.version == 3 else 16

    def split(self) -> Tuple[NanoTrackTemplate, NanoTrackSearch]:
        """
        (template encoder, search head), sharing this net's parameters and train/eval mode.

        torch.onnx.export restores the mode of the module it exports, so wrappers left in
        training mode would put the shared net in training mode after an export.
        """
        return (NanoTrackTemplate(self.backbone).train(self.training),
                NanoTrackSearch(self.backbone, self.ban_head).train(self.training))

    def forward(self, template: torch.Tensor,
                search: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template crop + search crop -> (cls, reg), as upstream's template() then track()."""
        return self.ban_head(self.backbone(template), self.backbone(search))
