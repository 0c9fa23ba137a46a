"""Backend registry: a plain dict of name -> factory, heavy imports done lazily."""
from __future__ import annotations

import importlib
from typing import Callable, Dict

from ..core.manifest import ModelSpec
from .base import Backend, BackendError


def _onnxruntime(spec: ModelSpec, device: str, **options) -> Backend:
    from .onnxruntime_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(spec, device=device, **options)


def _torch(spec: ModelSpec, device: str, **options) -> Backend:
    from .torch_backend import TorchBackend
    return TorchBackend(spec, device=device, **options)


def _tensorrt(spec: ModelSpec, device: str, **options) -> Backend:
    from .tensorrt_backend import TensorRTBackend
    return TensorRTBackend(spec, device=device, **options)


BACKENDS: Dict[str, Callable[..., Backend]] = {
    'onnxruntime': _onnxruntime,
    'torch': _torch,
    'tensorrt': _tensorrt,
}


def available(name: str) -> bool:
    """True when the runtime behind backend ``name`` can be imported here."""
    module = {'onnxruntime': 'onnxruntime', 'torch': 'torch', 'tensorrt': 'tensorrt'}[name]
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means 'not available'
        return False
    return True


def resolve_name(name: str, device: str = 'cpu') -> str:
    """Map 'auto' to the best backend present: tensorrt on a GPU device, else onnxruntime."""
    if name != 'auto':
        if name not in BACKENDS:
            raise BackendError(f'unknown backend {name!r}; choose one of '
                               f'{["auto", *BACKENDS]}')
        return name
    if device != 'cpu' and available('tensorrt'):
        return 'tensorrt'
    return 'onnxruntime'


def create_backend(name: str, spec: ModelSpec, device: str = 'cpu', **options) -> Backend:
    """Create backend ``name`` ('auto', 'onnxruntime', 'torch', 'tensorrt') for a model."""
    return BACKENDS[resolve_name(name, device)](spec, device, **options)
