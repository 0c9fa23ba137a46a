"""
SiamRPN++ networks whose parameter names and shapes match pysot checkpoints.

Three pysot configurations are covered, each under an ``arch`` name used in model manifests:

=================== =============================== ========================================
arch                pysot config                    backbone -> neck -> head
=================== =============================== ========================================
siamrpn_alex        siamrpn_alex_dwxcorr            AlexNetLegacy -> (none) -> DepthwiseRPN
siamrpn_mobilev2    siamrpn_mobilev2_l234_dwxcorr   MobileNetV2 x1.4 (layers 3, 5, 7) ->
                                                    AdjustAllLayer -> MultiRPN (mean)
siamrpn_r50         siamrpn_r50_l234_dwxcorr        ResNet-50 atrous (layers 2, 3, 4) ->
                                                    AdjustAllLayer -> MultiRPN (softmax-weighted)
=================== =============================== ========================================

The network is used in two halves, like the rest of this package (the backend holds no
template state):

* ``template(z)`` -> template features. These are the per-level depthwise correlation kernels
  (``conv_kernel`` of every cls/loc branch applied to the adjusted, centre-cropped template
  feature), so the per-frame graph does not recompute them.
* ``track(features, x)`` -> ``(cls, loc)``: the search branch, the depthwise cross-correlation
  with the given kernels (``ops.xcorr_depthwise``: exported as Slice/Mul/Add, no convolution
  with run-time weights, so TensorRT builds it) and the heads, fused over levels.

``forward(z, x)`` is the whole network as pysot runs it (grouped-convolution correlation,
``ops.xcorr_depthwise_conv``); the tests use it as the reference for the split halves.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .ops import xcorr_depthwise, xcorr_depthwise_conv

# Template feature maps at least this wide are not centre-cropped (pysot AdjustLayer).
_CROP_BELOW = 20


# ----------------------------------------------------------------------------------------------
# configuration

@dataclass(frozen=True)
class SiamRPNConfig:
    """The parts of a pysot YAML config that define the network, the anchors and the tracker."""

    meta_arc: str = 'siamrpn_r50_l234_dwxcorr'
    backbone_type: str = 'resnet50'
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    adjust: bool = True
    adjust_type: str = 'AdjustAllLayer'
    adjust_kwargs: Mapping[str, Any] = field(default_factory=dict)
    rpn_type: str = 'MultiRPN'
    rpn_kwargs: Mapping[str, Any] = field(default_factory=dict)
    mask: bool = False
    stride: int = 8
    ratios: Tuple[float, ...] = (0.33, 0.5, 1.0, 2.0, 3.0)
    scales: Tuple[float, ...] = (8.0,)
    tracker_type: str = 'SiamRPNTracker'
    penalty_k: float = 0.05
    window_influence: float = 0.42
    lr: float = 0.38
    exemplar_size: int = 127
    instance_size: int = 255
    base_size: int = 8
    context_amount: float = 0.5

    @property
    def arch(self) -> str:
        """Return the manifest arch name of this network (see ARCH_BACKBONES)."""
        for arch, backbone in ARCH_BACKBONES.items():
            if backbone == self.backbone_type.lower():
                return arch
        raise ValueError(f'pysot backbone {self.backbone_type!r} is not supported; supported: '
                         f'{sorted(ARCH_BACKBONES.values())}')

    @property
    def score_size(self) -> int:
        """Side of the score map, as pysot's SiamRPNTracker computes it."""
        return (self.instance_size - self.exemplar_size) // self.stride + 1 + self.base_size

    def tracker_params(self) -> Dict[str, float]:
        """Tracker hyper-parameters in core.config.TrackerConfig field names."""
        return {'exemplar_size': int(self.exemplar_size),
                'instance_size': int(self.instance_size),
                'context_amount': float(self.context_amount),
                'penalty_k': float(self.penalty_k),
                'window_influence': float(self.window_influence),
                'lr': float(self.lr)}


ARCH_BACKBONES = {'siamrpn_alex': 'alexnetlegacy', 'siamrpn_mobilev2': 'mobilenetv2',
                  'siamrpn_r50': 'resnet50'}

# The three published pysot configurations (what the configs in pysot's experiments/ say).
DEFAULT_CONFIGS: Dict[str, SiamRPNConfig] = {
    'siamrpn_alex': SiamRPNConfig(
        meta_arc='siamrpn_alex_dwxcorr', backbone_type='alexnetlegacy',
        backbone_kwargs={'width_mult': 1.0}, adjust=False, adjust_type='', adjust_kwargs={},
        rpn_type='DepthwiseRPN',
        rpn_kwargs={'anchor_num': 5, 'in_channels': 256, 'out_channels': 256},
        penalty_k=0.16, window_influence=0.40, lr=0.30, instance_size=287, base_size=0),
    'siamrpn_mobilev2': SiamRPNConfig(
        meta_arc='siamrpn_mobilev2_l234_dwxcorr', backbone_type='mobilenetv2',
        backbone_kwargs={'used_layers': [3, 5, 7], 'width_mult': 1.4},
        adjust_kwargs={'in_channels': [44, 134, 448], 'out_channels': [256, 256, 256]},
        rpn_kwargs={'anchor_num': 5, 'in_channels': [256, 256, 256], 'weighted': False},
        penalty_k=0.04, window_influence=0.4, lr=0.5),
    'siamrpn_r50': SiamRPNConfig(
        meta_arc='siamrpn_r50_l234_dwxcorr', backbone_type='resnet50',
        backbone_kwargs={'used_layers': [2, 3, 4]},
        adjust_kwargs={'in_channels': [512, 1024, 2048], 'out_channels': [256, 256, 256]},
        rpn_kwargs={'anchor_num': 5, 'in_channels': [256, 256, 256], 'weighted': True},
        penalty_k=0.05, window_influence=0.42, lr=0.38),
}


def config_from_mapping(data: Mapping[str, Any]) -> SiamRPNConfig:
    """
    Read the network / anchor / tracker sections of a parsed pysot YAML config.

    Missing sections take pysot's defaults (pysot/core/config.py); unsupported features
    (mask heads, other RPN types) raise ValueError naming the entry.
    """
    def section(name: str) -> Mapping[str, Any]:
        value = data.get(name) or {}
        if not isinstance(value, Mapping):
            raise ValueError(f'pysot config: {name} must be a mapping, got {value!r}')
        return value

    backbone, adjust, rpn = section('BACKBONE'), section('ADJUST'), section('RPN')
    anchor, track, mask = section('ANCHOR'), section('TRACK'), section('MASK')
    if mask.get('MASK', False):
        raise ValueError('pysot config: MASK.MASK is true (SiamMask); only SiamRPN++ '
                         '(box) models are supported')
    if 'TYPE' not in backbone:
        raise ValueError('pysot config: BACKBONE.TYPE is missing')
    rpn_type = rpn.get('TYPE', 'DepthwiseRPN')
    if rpn_type not in ('DepthwiseRPN', 'MultiRPN'):
        raise ValueError(f'pysot config: RPN.TYPE {rpn_type!r} is not supported; '
                         'supported: DepthwiseRPN, MultiRPN')
    track_type = track.get('TYPE', 'SiamRPNTracker')
    if track_type != 'SiamRPNTracker':
        raise ValueError(f'pysot config: TRACK.TYPE {track_type!r} is not supported; '
                         'only SiamRPNTracker')
    adjust_on = bool(adjust.get('ADJUST', True))
    adjust_type = adjust.get('TYPE', 'AdjustAllLayer') if adjust_on else ''
    if adjust_on and adjust_type not in ('AdjustLayer', 'AdjustAllLayer'):
        raise ValueError(f'pysot config: ADJUST.TYPE {adjust_type!r} is not supported')
    ratios = tuple(float(r) for r in anchor.get('RATIOS', (0.33, 0.5, 1, 2, 3)))
    scales = tuple(float(s) for s in anchor.get('SCALES', (8,)))
    if 'ANCHOR_NUM' in anchor and int(anchor['ANCHOR_NUM']) != len(ratios) * len(scales):
        raise ValueError(f'pysot config: ANCHOR.ANCHOR_NUM {anchor["ANCHOR_NUM"]} is not '
                         f'len(RATIOS) * len(SCALES) = {len(ratios) * len(scales)}')
    cfg = SiamRPNConfig(
        meta_arc=str(data.get('META_ARC', '')),
        backbone_type=str(backbone['TYPE']),
        backbone_kwargs=dict(backbone.get('KWARGS') or {}),
        adjust=adjust_on, adjust_type=adjust_type,
        adjust_kwargs=dict(adjust.get('KWARGS') or {}) if adjust_on else {},
        rpn_type=rpn_type, rpn_kwargs=dict(rpn.get('KWARGS') or {}),
        stride=int(anchor.get('STRIDE', 8)), ratios=ratios, scales=scales,
        tracker_type=track_type,
        penalty_k=float(track.get('PENALTY_K', 0.04)),
        window_influence=float(track.get('WINDOW_INFLUENCE', 0.44)),
        lr=float(track.get('LR', 0.4)),
        exemplar_size=int(track.get('EXEMPLAR_SIZE', 127)),
        instance_size=int(track.get('INSTANCE_SIZE', 255)),
        base_size=int(track.get('BASE_SIZE', 8)),
        context_amount=float(track.get('CONTEXT_AMOUNT', 0.5)))
    cfg.arch  # noqa: B018 - raises ValueError for an unsupported backbone
    anchor_num = int(cfg.rpn_kwargs.get('anchor_num', 5))
    if anchor_num != len(ratios) * len(scales):
        raise ValueError(f'pysot config: RPN.KWARGS.anchor_num {anchor_num} does not match '
                         f'the {len(ratios) * len(scales)} anchors of ANCHOR')
    return cfg


def load_config(path) -> SiamRPNConfig:
    """Parse a pysot YAML config file (experiments/*/config.yaml)."""
    import yaml
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ValueError(f'cannot read pysot config {path}: {exc}') from exc
    except yaml.YAMLError as exc:
        raise ValueError(f'pysot config {path} is not valid YAML: {exc}') from exc
    if not isinstance(data, Mapping):
        raise ValueError(f'pysot config {path} is not a YAML mapping')
    try:
        return config_from_mapping(data)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from exc


# ----------------------------------------------------------------------------------------------
# backbones (pysot/models/backbone)

class AlexNetLegacy(nn.Module):
    """pysot 'alexnetlegacy': one ``features`` Sequential (BN after every conv, no padding)."""

    widths = (3, 96, 256, 384, 384, 256)

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        c = [3] + [int(w * width_mult) for w in self.widths[1:]]
        self.features = nn.Sequential(
            nn.Conv2d(c[0], c[1], kernel_size=11, stride=2), nn.BatchNorm2d(c[1]),
            nn.MaxPool2d(kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(c[1], c[2], kernel_size=5), nn.BatchNorm2d(c[2]),
            nn.MaxPool2d(kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], kernel_size=3), nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], kernel_size=3), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True),
            nn.Conv2d(c[4], c[5], kernel_size=3), nn.BatchNorm2d(c[5]))
        self.feature_size = c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> one feature map."""
        return self.features(x)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block; pysot pads the depthwise conv by the dilation (or 2 - stride)."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = inp * expand
        padding = dilation if dilation > 1 else 2 - stride
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, padding, dilation=dilation, groups=hidden,
                      bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Sequential):
    """pysot 'mobilenetv2': layer0..layer7, the later stages dilated instead of strided."""

    # expand t, channels c, repeats n, stride s, dilation d
    settings = ((1, 16, 1, 1, 1), (6, 24, 2, 2, 1), (6, 32, 3, 2, 1), (6, 64, 4, 1, 2),
                (6, 96, 3, 1, 2), (6, 160, 3, 1, 4), (6, 320, 1, 1, 4))

    def __init__(self, width_mult: float = 1.0, used_layers: Sequence[int] = (3, 5, 7)):
        super().__init__()
        self.used_layers = [int(i) for i in used_layers]
        channels = int(32 * width_mult)
        self.add_module('layer0', nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 0, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU6(inplace=True)))
        last_dilation = 1
        for idx, (t, c, n, s, d) in enumerate(self.settings, start=1):
            out = int(c * width_mult)
            blocks = []
            for i in range(n):
                if i == 0:
                    dd = d if d == last_dilation else max(d // 2, 1)
                    blocks.append(_InvertedResidual(channels, out, s, t, dd))
                else:
                    blocks.append(_InvertedResidual(channels, out, 1, t, d))
                channels = out
            last_dilation = d
            self.add_module(f'layer{idx}', nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor):
        """Image -> the feature maps of ``used_layers`` (one map when only one is used)."""
        outputs = []
        for idx in range(8):
            x = getattr(self, f'layer{idx}')(x)
            outputs.append(x)
        out = [outputs[i] for i in self.used_layers]
        return out[0] if len(out) == 1 else out


class _Bottleneck(nn.Module):
    """ResNet bottleneck with pysot's atrous padding rules."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, dilation: int = 1):
        super().__init__()
        padding = 2 - stride
        if downsample is not None and dilation > 1:
            dilation = dilation // 2
            padding = dilation
        if dilation > 1:
            padding = dilation
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=padding,
                               bias=False, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNet50(nn.Module):
    """pysot 'resnet50' (resnet_atrous): layer3/layer4 dilated 2/4, stride 8 overall."""

    def __init__(self, used_layers: Sequence[int] = (2, 3, 4)):
        super().__init__()
        self.used_layers = [int(i) for i in used_layers]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, dilation=2) if 3 in self.used_layers else None
        self.layer4 = self._make_layer(512, 3, dilation=4) if 4 in self.used_layers else None

    def _make_layer(self, planes: int, blocks: int, stride: int = 1,
                    dilation: int = 1) -> nn.Sequential:
        downsample = None
        out_planes = planes * _Bottleneck.expansion
        if stride != 1 or self.inplanes != out_planes:
            if stride == 1 and dilation == 1:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride,
                              bias=False),
                    nn.BatchNorm2d(out_planes))
            else:
                dd = dilation // 2 if dilation > 1 else 1
                padding = dd if dilation > 1 else 0
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out_planes, kernel_size=3, stride=stride,
                              bias=False, padding=padding, dilation=dd),
                    nn.BatchNorm2d(out_planes))
        layers = [_Bottleneck(self.inplanes, planes, stride, downsample, dilation=dilation)]
        self.inplanes = out_planes
        layers += [_Bottleneck(self.inplanes, planes, dilation=dilation)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor):
        """Image -> the feature maps of ``used_layers`` (0: stem, 1..4: stages)."""
        x_ = self.relu(self.bn1(self.conv1(x)))
        p1 = self.layer1(self.maxpool(x_))
        p2 = self.layer2(p1)
        p3 = self.layer3(p2) if self.layer3 is not None else p2
        p4 = self.layer4(p3) if self.layer4 is not None else p3
        out = [(x_, p1, p2, p3, p4)[i] for i in self.used_layers]
        return out[0] if len(out) == 1 else out


def build_backbone(kind: str, **kwargs) -> nn.Module:
    """Build a pysot backbone by its config TYPE."""
    kind = kind.lower()
    if kind == 'alexnetlegacy':
        return AlexNetLegacy(**kwargs)
    if kind == 'mobilenetv2':
        return MobileNetV2(**kwargs)
    if kind == 'resnet50':
        return ResNet50(**kwargs)
    raise ValueError(f'pysot backbone {kind!r} is not supported; supported: '
                     f'{sorted(ARCH_BACKBONES.values())}')


# ----------------------------------------------------------------------------------------------
# neck (pysot/models/neck)

class AdjustLayer(nn.Module):
    """1x1 conv + BN; a template-sized map (< 20 wide) is cropped to its centre 7x7."""

    def __init__(self, in_channels: int, out_channels: int, center_size: int = 7):
        super().__init__()
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.center_size = center_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project, then crop the centre when the map is a template's (static shapes)."""
        x = self.downsample(x)
        width = int(x.shape[3])
        if width < _CROP_BELOW:
            left = (width - self.center_size) // 2
            right = left + self.center_size
            x = x[:, :, left:right, left:right]
        return x


class AdjustAllLayer(nn.Module):
    """One AdjustLayer per backbone level, named downsample2, downsample3, ... like pysot."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int],
                 center_size: int = 7):
        super().__init__()
        self.num = len(out_channels)
        if self.num == 1:
            self.downsample = AdjustLayer(in_channels[0], out_channels[0], center_size)
        else:
            for i in range(self.num):
                self.add_module(f'downsample{i + 2}',
                                AdjustLayer(in_channels[i], out_channels[i], center_size))

    def forward(self, features):
        """Adjust one map (single level) or a list of maps."""
        if self.num == 1:
            return self.downsample(features)
        return [getattr(self, f'downsample{i + 2}')(f) for i, f in enumerate(features)]


def build_neck(kind: str, **kwargs) -> nn.Module:
    """Build a pysot neck by its config TYPE."""
    if kind == 'AdjustAllLayer':
        return AdjustAllLayer(**kwargs)
    if kind == 'AdjustLayer':
        return AdjustLayer(**kwargs)
    raise ValueError(f'pysot neck {kind!r} is not supported')


# ----------------------------------------------------------------------------------------------
# heads (pysot/models/head/rpn.py)

class DepthwiseXCorr(nn.Module):
    """One branch (cls or loc): kernel conv, search conv, depthwise xcorr, 1x1 head."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv_kernel = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=kernel_size, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.conv_search = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=kernel_size, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, kernel_size=1))

    def kernel(self, z_f: torch.Tensor) -> torch.Tensor:
        """Map a template feature to its correlation kernel: the template side."""
        return self.conv_kernel(z_f)

    def correlate(self, kernel: torch.Tensor, x_f: torch.Tensor, xcorr=xcorr_depthwise):
        """Correlation kernel + search feature -> branch output."""
        return self.head(xcorr(self.conv_search(x_f), kernel))

    def forward(self, z_f: torch.Tensor, x_f: torch.Tensor) -> torch.Tensor:
        """Run the branch as pysot does (grouped-conv correlation)."""
        return self.correlate(self.kernel(z_f), x_f, xcorr_depthwise_conv)


class DepthwiseRPN(nn.Module):
    """cls (2K channels) and loc (4K channels) depthwise branches."""

    def __init__(self, anchor_num: int = 5, in_channels: int = 256, out_channels: int = 256):
        super().__init__()
        self.cls = DepthwiseXCorr(in_channels, out_channels, 2 * anchor_num)
        self.loc = DepthwiseXCorr(in_channels, out_channels, 4 * anchor_num)
        self.levels = 1

    def kernels(self, z_fs) -> List[torch.Tensor]:
        """Template feature(s) -> [cls kernel, loc kernel]."""
        z_f = z_fs[0] if isinstance(z_fs, (list, tuple)) else z_fs
        return [self.cls.kernel(z_f), self.loc.kernel(z_f)]

    def correlate(self, kernels: Sequence[torch.Tensor], x_fs, xcorr=xcorr_depthwise):
        """[cls kernel, loc kernel] + search feature(s) -> (cls, loc)."""
        x_f = x_fs[0] if isinstance(x_fs, (list, tuple)) else x_fs
        return (self.cls.correlate(kernels[0], x_f, xcorr),
                self.loc.correlate(kernels[1], x_f, xcorr))

    def forward(self, z_f, x_f):
        """Run pysot's forward pass."""
        return self.correlate(self.kernels(z_f), x_f, xcorr_depthwise_conv)


class MultiRPN(nn.Module):
    """One DepthwiseRPN per level (rpn2, rpn3, ...), fused by mean or softmax weights."""

    def __init__(self, anchor_num: int, in_channels: Sequence[int], weighted: bool = False):
        super().__init__()
        self.weighted = bool(weighted)
        self.levels = len(in_channels)
        for i, c in enumerate(in_channels):
            self.add_module(f'rpn{i + 2}', DepthwiseRPN(anchor_num, c, c))
        if self.weighted:
            self.cls_weight = nn.Parameter(torch.ones(len(in_channels)))
            self.loc_weight = nn.Parameter(torch.ones(len(in_channels)))

    def kernels(self, z_fs) -> List[torch.Tensor]:
        """Template features -> [cls2, loc2, cls3, loc3, ...] kernels."""
        out: List[torch.Tensor] = []
        for i, z_f in enumerate(z_fs):
            out += getattr(self, f'rpn{i + 2}').kernels(z_f)
        return out

    def correlate(self, kernels: Sequence[torch.Tensor], x_fs, xcorr=xcorr_depthwise):
        """Kernels + search features -> fused (cls, loc)."""
        cls, loc = [], []
        for i, x_f in enumerate(x_fs):
            c, l_ = getattr(self, f'rpn{i + 2}').correlate(kernels[2 * i:2 * i + 2], x_f, xcorr)
            cls.append(c)
            loc.append(l_)
        if self.weighted:
            return (_weighted_sum(cls, F.softmax(self.cls_weight, 0)),
                    _weighted_sum(loc, F.softmax(self.loc_weight, 0)))
        return sum(cls) / len(cls), sum(loc) / len(loc)

    def forward(self, z_fs, x_fs):
        """Run pysot's forward pass."""
        return self.correlate(self.kernels(z_fs), x_fs, xcorr_depthwise_conv)


def _weighted_sum(maps: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    total = maps[0] * weights[0]
    for i in range(1, len(maps)):
        total = total + maps[i] * weights[i]
    return total


def build_rpn(kind: str, **kwargs) -> nn.Module:
    """Build a pysot RPN head by its config TYPE."""
    if kind == 'DepthwiseRPN':
        return DepthwiseRPN(**kwargs)
    if kind == 'MultiRPN':
        return MultiRPN(**kwargs)
    raise ValueError(f'pysot RPN head {kind!r} is not supported')


# ----------------------------------------------------------------------------------------------
# the model

class SiamRPNpp(nn.Module):
    """pysot ModelBuilder equivalent (backbone, neck, rpn_head) with a split interface."""

    def __init__(self, config: Optional[SiamRPNConfig] = None):
        super().__init__()
        self.config = config or DEFAULT_CONFIGS['siamrpn_r50']
        cfg = self.config
        self.backbone = build_backbone(cfg.backbone_type, **dict(cfg.backbone_kwargs))
        if cfg.adjust:
            self.neck = build_neck(cfg.adjust_type, **dict(cfg.adjust_kwargs))
        self.rpn_head = build_rpn(cfg.rpn_type, **dict(cfg.rpn_kwargs))

    @property
    def arch(self) -> str:
        """Manifest arch name."""
        return self.config.arch

    @property
    def exemplar_size(self) -> int:
        """Template crop side."""
        return self.config.exemplar_size

    @property
    def instance_size(self) -> int:
        """Search crop side."""
        return self.config.instance_size

    @property
    def stride(self) -> int:
        """Anchor stride."""
        return self.config.stride

    @property
    def score_size(self) -> int:
        """Side of the cls/loc maps."""
        return self.config.score_size

    @property
    def levels(self) -> int:
        """Return the number of feature levels fused by the head."""
        return self.rpn_head.levels

    def _features(self, image: torch.Tensor):
        f = self.backbone(image)
        if self.config.adjust:
            f = self.neck(f)
        return f

    def template(self, z: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Template crop (1, 3, 127, 127) raw BGR -> correlation kernels.

        Order: [cls, loc] for one level; [cls2, loc2, cls3, loc3, cls4, loc4] for three.
        """
        return tuple(self.rpn_head.kernels(self._features(z)))

    def track(self, features: Sequence[torch.Tensor], x: torch.Tensor,
              xcorr=xcorr_depthwise) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernels from template() + search crop -> (cls [1, 2K, S, S], loc [1, 4K, S, S])."""
        return self.rpn_head.correlate(list(features), self._features(x), xcorr)

    def split(self) -> Tuple['SiamRPNTemplate', 'SiamRPNSearch']:
        """
        (template encoder, search head), sharing this net's parameters.

        The wrappers take this net's train/eval mode: torch.onnx.export restores the mode of
        the module it exports, which would otherwise put the shared net in training mode.
        """
        return (SiamRPNTemplate(self).train(self.training),
                SiamRPNSearch(self).train(self.training))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Whole network as pysot runs it (reference for the split halves)."""
        return self.rpn_head(self._features(z), self._features(x))


class SiamRPNTemplate(nn.Module):
    """Template encoder: template crop (1, 3, 127, 127) -> correlation kernels."""

    def __init__(self, net: SiamRPNpp):
        super().__init__()
        self.net = net

    def forward(self, template: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Encode a template crop."""
        return self.net.template(template)


class SiamRPNSearch(nn.Module):
    """Search head: search crop + the template's kernels -> (cls, loc)."""

    def __init__(self, net: SiamRPNpp):
        super().__init__()
        self.net = net

    def forward(self, search: torch.Tensor,
                *kernels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Score a search crop against the template kernels."""
        return self.net.track(kernels, search)


def build(arch: str, config: Optional[SiamRPNConfig] = None) -> SiamRPNpp:
    """Build ``arch`` ('siamrpn_alex' | 'siamrpn_mobilev2' | 'siamrpn_r50'), eval mode."""
    if arch not in DEFAULT_CONFIGS:
        raise ValueError(f'unknown SiamRPN++ arch {arch!r}; known: {sorted(DEFAULT_CONFIGS)}')
    cfg = config if config is not None else DEFAULT_CONFIGS[arch]
    if cfg.arch != arch:
        raise ValueError(f'config is for {cfg.arch}, not {arch}')
    return SiamRPNpp(cfg).eval()


def with_geometry(cfg: SiamRPNConfig, **changes: Any) -> SiamRPNConfig:
    """Copy of ``cfg`` with tracker fields changed (e.g. a smaller instance_size for tests)."""
    return dataclasses.replace(cfg, **changes)
