"""
Import a pysot SiamRPN++ checkpoint (config.yaml + model.pth) as a product model directory.

``siam-model import pysot --config CONFIG.yaml --checkpoint model.pth --out MODEL``:

1. the network is built from the config (``nets.siamrpn``: AlexNet, MobileNetV2 or ResNet-50);
2. the checkpoint is loaded strictly: every parameter and buffer name and shape must match.
   pysot's conventions are accepted: the state dict alone or under 'state_dict' (training
   snapshots), a 'module.' prefix (DataParallel), and absent BatchNorm 'num_batches_tracked'
   counters (checkpoints converted from older PyTorch; pysot ignores them too, they do not
   affect inference);
3. the split graphs are exported (template.onnx -> correlation kernels; search.onnx), with
   constant-weight convolutions only, and checked against PyTorch in ONNX Runtime;
4. the model directory gets the graphs, ``checkpoint.pth`` (the complete state dict, which the
   torch backend loads strictly) and a manifest: family 'siamrpn', decoder 'anchor', anchors
   and stride from ANCHOR, tracker hyper-parameters from TRACK.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import tempfile
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from . import siamrpn
from .export import cpu_session
from .registry import read_state_dict
from ..core.config import TrackerConfig
from ..core.manifest import AnchorSpec, ModelError, ModelSpec

PathLike = Union[str, Path]

# Opset of the exported graphs (TensorRT 8.6/10 and ONNX Runtime >= 1.12 read it).
OPSET = 17
# Export check: max |ORT - PyTorch| must stay below ATOL + RTOL * max|PyTorch|.
VERIFY_ATOL = 1e-4
VERIFY_RTOL = 1e-3


class CheckpointMismatch(ModelError):
    """A checkpoint's parameter names or shapes do not match the network of the config."""


@dataclass(frozen=True)
class KeyReport:
    """Differences between a checkpoint state dict and a network's state dict."""

    missing: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    shape_mismatch: Tuple[Tuple[str, Tuple[int, ...], Tuple[int, ...]], ...]
    filled: Tuple[str, ...]  # num_batches_tracked counters taken from the network

    @property
    def ok(self) -> bool:
        """Return True when the checkpoint loads strictly."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 12) -> str:
        """Human-readable list of the differences (at most ``limit`` names per kind)."""
        def names(items):
            shown = ', '.join(items[:limit])
            more = f', ... ({len(items) - limit} more)' if len(items) > limit else ''
            return f'[{shown}{more}]'
        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing keys {names(list(self.missing))}')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected keys '
                         f'{names(list(self.unexpected))}')
        if self.shape_mismatch:
            items = [f'{k}: checkpoint {tuple(a)} vs network {tuple(b)}'
                     for k, a, b in self.shape_mismatch]
            parts.append(f'{len(items)} shape mismatches {names(items)}')
        return '; '.join(parts) or 'all keys match'


def compare_keys(net: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> KeyReport:
    """Report what stops ``state`` from loading strictly into ``net``."""
    own = net.state_dict()
    counters = tuple(k for k in own if k.endswith('num_batches_tracked') and k not in state)
    missing = tuple(k for k in own if k not in state and k not in counters)
    unexpected = tuple(k for k in state if k not in own)
    mismatch = tuple((k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                     if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    return KeyReport(missing, unexpected, mismatch, counters)


def load_pysot_weights(net: torch.nn.Module, path: PathLike,
                       config_name: str = '') -> KeyReport:
    """Load a pysot checkpoint into ``net`` strictly; raise CheckpointMismatch listing why not."""
    state = dict(read_state_dict(path))
    report = compare_keys(net, state)
    if not report.ok:
        what = f' built from {config_name}' if config_name else ''
        raise CheckpointMismatch(
            f'checkpoint {path} does not fit the {getattr(net, "arch", type(net).__name__)} '
            f'network{what}: {report.describe()}. Use the config.yaml that was trained with '
            'this model.pth (pysot experiments/<name>/config.yaml).')
    full = dict(state)
    own = net.state_dict()
    for key in report.filled:
        full[key] = own[key]
    net.load_state_dict(full, strict=True)
    return report


def verify_export(net: siamrpn.SiamRPNpp, template_onnx: PathLike, search_onnx: PathLike,
                  samples: int = 2, seed: int = 0) -> Dict[str, float]:
    """
    Run the exported graphs in ONNX Runtime beside PyTorch; return max abs error per output.

    The PyTorch reference is pysot's whole-network forward (grouped-conv correlation). Raises
    ModelError when an output differs by more than VERIFY_ATOL + VERIFY_RTOL * max|ref|.
    """
    tsess, ssess = cpu_session(template_onnx), cpu_session(search_onnx)
    gen = torch.Generator().manual_seed(seed)
    z_size, x_size = net.exemplar_size, net.instance_size
    errors: Dict[str, float] = {'cls': 0.0, 'reg': 0.0}
    for _ in range(samples):
        z = torch.rand(1, 3, z_size, z_size, generator=gen) * 255.0
        x = torch.rand(1, 3, x_size, x_size, generator=gen) * 255.0
        with torch.inference_mode():
            ref = net(z, x)
        feats = tsess.run(None, {tsess.get_inputs()[0].name: z.numpy()})
        feeds = {i.name: f for i, f in zip(ssess.get_inputs()[1:], feats)}
        feeds[ssess.get_inputs()[0].name] = x.numpy()
        names = [o.name for o in ssess.get_outputs()]
        got = ssess.run(names, feeds)
        for name, r, g in zip(('cls', 'reg'), ref, got):
            r = r.numpy()
            err = float(np.max(np.abs(r - g)))
            errors[name] = max(errors[name], err)
            bound = VERIFY_ATOL + VERIFY_RTOL * float(np.max(np.abs(r)))
            if not err <= bound:
                raise ModelError(f'exported {name} differs from PyTorch by {err:.3g} '
                                 f'(allowed {bound:.3g}); the export is broken')
    return errors


def tracker_config(cfg: siamrpn.SiamRPNConfig) -> TrackerConfig:
    """Return the TRACK section as a TrackerConfig."""
    return TrackerConfig().replace(**cfg.tracker_params())


def import_pysot(config_path: PathLike, checkpoint_path: PathLike, out_dir: PathLike,
                 name: Optional[str] = None, opset: int = OPSET,
                 verify: bool = True) -> ModelSpec:
    """Turn a pysot config + checkpoint into a model directory; return its verified spec."""
    try:
        cfg = siamrpn.load_config(config_path)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    net = siamrpn.SiamRPNpp(cfg).eval()
    load_pysot_weights(net, checkpoint_path, config_name=str(config_path))
    return export_model(net, out_dir, name=name or cfg.meta_arc or cfg.arch, opset=opset,
                        verify=verify)


def export_model(net: siamrpn.SiamRPNpp, out_dir: PathLike, name: Optional[str] = None,
                 opset: int = OPSET, verify: bool = True) -> ModelSpec:
    """Export a (loaded) SiamRPN++ net as a model directory: graphs, checkpoint, manifest."""
    from .export import CHECKPOINT_FILE, export_split, write_model_dir
    cfg = net.config
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    net.eval()
    tpath, spath = export_split(net, root, cfg.exemplar_size, cfg.instance_size, opset=opset)
    net.eval()
    if verify:
        verify_export(net, tpath, spath)
    with tempfile.TemporaryDirectory(dir=str(root)) as tmp:
        ckpt = Path(tmp) / CHECKPOINT_FILE
        torch.save({'arch': cfg.arch, 'state_dict': net.state_dict()}, ckpt)
        return write_model_dir(
            root, name=name or cfg.arch, family='siamrpn', arch=cfg.arch, decoder='anchor',
            stride=cfg.stride, tracker=tracker_config(cfg), template_onnx=tpath,
            search_onnx=spath, checkpoint=ckpt,
            anchors=AnchorSpec(tuple(cfg.ratios), tuple(cfg.scales)))


def random_model(arch: str, out_dir: PathLike, seed: int = 0, name: Optional[str] = None,
                 **geometry) -> Tuple[ModelSpec, siamrpn.SiamRPNpp]:
    """
    Write a randomly initialised SiamRPN++ model directory (tests and benchmarks; no accuracy).

    ``geometry`` may change tracker fields of the default config (e.g. instance_size).
    See ``randomise`` for how the weights are made.
    """
    cfg = siamrpn.DEFAULT_CONFIGS[arch]
    if geometry:
        cfg = siamrpn.with_geometry(cfg, **geometry)
    net = siamrpn.SiamRPNpp(cfg)
    randomise(net, seed)
    spec = export_model(net, out_dir, name=name or f'{arch}-random', verify=False)
    return spec, net


def randomise(net: siamrpn.SiamRPNpp, seed: int = 0) -> siamrpn.SiamRPNpp:
    """
    Random weights whose activations stay O(1), like a trained net's (eval mode on return).

    Default initialisation on raw 0..255 pixels makes outputs explode or vanish with depth;
    instead every BatchNorm takes the statistics of a small batch of image-like crops (one
    training-mode forward with momentum 1), then random affine parameters; the box
    regression output is scaled down so exp(delta) stays in a sane range, and weighted
    multi-level fusion gets uneven weights.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            m.reset_parameters()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    z = _calibration_images(net.exemplar_size, gen)
    x = _calibration_images(net.instance_size, gen)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(z, x)
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        head = net.rpn_head
        if getattr(head, 'weighted', False):  # uneven level fusion weights
            head.cls_weight.copy_(torch.randn(head.levels, generator=gen))
            head.loc_weight.copy_(torch.randn(head.levels, generator=gen))
        for name, module in net.named_modules():
            if name.endswith('loc.head.3'):
                module.weight.mul_(0.2)
                module.bias.mul_(0.2)
    return net.eval()


def _calibration_images(size: int, gen: torch.Generator) -> torch.Tensor:
    """(4, 3, size, size) raw-pixel crops: noise, smooth texture, a gradient, a flat patch."""
    noise = torch.rand(1, 3, size, size, generator=gen) * 255.0
    coarse = torch.rand(1, 3, max(size // 16, 2), max(size // 16, 2), generator=gen) * 255.0
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode='bilinear',
                                             align_corners=False)
    ramp = torch.linspace(0.0, 255.0, size).expand(1, 3, size, size).contiguous()
    flat = torch.full((1, 3, size, size), 110.0) + torch.rand(1, 3, 1, 1, generator=gen) * 40
    return torch.cat([noise, smooth, ramp, 0.7 * flat + 0.3 * smooth])
