"""
Network registry: a plain dict of architecture name -> constructor, plus checkpoint loading.

Every registered net is an ``nn.Module`` whose ``split()`` returns (template encoder, search
head); see ``nets.export`` for that contract. Constructors import their module lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Union

import numpy as np
import torch
import torch.nn as nn

from ..core.manifest import ModelError


def _numpy_safe_globals() -> list:
    """
    Numpy scalar/dtype classes that training snapshots pickle (e.g. in optimizer state).

    Allowing them keeps ``torch.load(weights_only=True)`` (no arbitrary code) usable for the
    upstream NanoTrack/pysot snapshots.
    """
    core = getattr(np, '_core', None) or np.core
    scalar = core.multiarray.scalar
    out: list = [(scalar, 'numpy.core.multiarray.scalar'),
                 (scalar, 'numpy._core.multiarray.scalar'), np.dtype]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def _nanotrack(version: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .nanotrack import NanoTrack
        return NanoTrack(version)
    build.__doc__ = f'NanoTrack v{version}.'
    return build


def _siamrpn(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .siamrpn import build as build_siamrpn
        return build_siamrpn(arch)
    build.__doc__ = f'SiamRPN++ {arch} (pysot parameter names).'
    return build


NETS: Dict[str, Callable[[], nn.Module]] = {
    'nanotrack_v1': _nanotrack(1),
    'nanotrack_v2': _nanotrack(2),
    'nanotrack_v3': _nanotrack(3),
    'siamrpn_alex': _siamrpn('siamrpn_alex'),
    'siamrpn_mobilev2': _siamrpn('siamrpn_mobilev2'),
    'siamrpn_r50': _siamrpn('siamrpn_r50'),
}


def build_net(arch: str) -> nn.Module:
    """Construct the (untrained, eval-mode) network registered as ``arch``."""
    if arch not in NETS:
        raise ModelError(f'unknown network architecture {arch!r}; known: {sorted(NETS)}')
    return NETS[arch]().eval()


def _state_dict_of(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """Return the parameter mapping inside a loaded checkpoint (pysot / NanoTrack layouts)."""
    if isinstance(obj, Mapping):
        for key in ('state_dict', 'model', 'net'):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            # DataParallel checkpoints prefix every key with 'module.'.
            if obj and all(k.startswith('module.') for k in obj):
                obj = {k[len('module.'):]: v for k, v in obj.items()}
            return obj
    raise ModelError(f'{path} is not a checkpoint with a state_dict (a mapping of parameter '
                     'names to tensors, alone or under "state_dict")')


def read_state_dict(path: Union[str, Path]) -> Mapping[str, torch.Tensor]:
    """
    Read the parameter mapping of a checkpoint file (CPU tensors, loaded with ``weights_only``).

    Accepts a bare state dict or a dict holding it under 'state_dict' (NanoTrack, pysot
    snapshots), 'model' or 'net'; a DataParallel 'module.' prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'checkpoint {path} does not exist')
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ModelError(f'cannot read checkpoint {path}: {exc or type(exc).__name__} (not a '
                         'torch.save file, or truncated)') from exc
    return _state_dict_of(obj, path)


def load_weights(net: nn.Module, path: Union[str, Path], strict: bool = True) -> nn.Module:
    """
    Load checkpoint ``path`` into ``net`` (CPU tensors, ``weights_only``); return ``net``.

    Accepts a bare state dict or a dict holding it under 'state_dict' (NanoTrack, pysot
    snapshots) or 'model'. With ``strict`` every key must match both ways; the error lists the
    missing and unexpected keys.
    """
    state = read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ModelError(
            f'checkpoint {path} does not match {type(net).__name__}: '
            f'{len(missing)} missing keys [' + ', '.join(missing[:8]) + '], '
            f'{len(unexpected)} unexpected keys [' + ', '.join(unexpected[:8]) + ']')
    wrong = [f'{k} {tuple(v.shape)} vs {tuple(own[k].shape)}' for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ModelError(f'checkpoint {path} does not match {type(net).__name__}: '
                         f'{len(wrong)} tensors have other shapes (checkpoint vs net): '
                         + '; '.join(wrong[:4]))
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net.eval()
