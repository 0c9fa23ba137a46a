"""
Backend registry: a plain dict of name -> factory, heavy imports done lazily.

A name of the form ``package.module:factory`` names a backend outside this package (a
custom runtime): the module is imported and ``factory(spec, device, **options)`` is
called like the built-in factories; it must return a ``backends.base.Backend``.
"""
from __future__ import annotations

from dataclasses import dataclass
import importlib
import logging
from typing import Callable, Dict, Tuple

from .base import Backend, BackendError
from ..core.manifest import ModelSpec

LOG = logging.getLogger(__name__)


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


def plugin_factory(name: str) -> Callable[..., Backend]:
    """
    Import and return the factory a plugin backend name 'package.module:factory' names.

    Raises BackendError saying what is wrong when the name is malformed, the module cannot be
    imported or has no such callable.
    """
    module_name, _, attr = name.partition(':')
    if not module_name or not attr or ':' in attr:
        raise BackendError(f'plugin backend {name!r} must be written package.module:factory')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f'plugin backend {name!r}: cannot import {module_name!r} ({exc}); '
                           'install it or put its folder on PYTHONPATH') from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise BackendError(f'plugin backend {name!r}: module {module_name!r} has no callable '
                           f'{attr!r}')
    return factory


def _create_plugin(name: str, spec: ModelSpec, device: str, **options) -> Backend:
    backend = plugin_factory(name)(spec, device, **options)
    if not isinstance(backend, Backend):
        raise BackendError(f'plugin backend {name!r} returned {type(backend).__name__}, which '
                           'lacks the Backend interface (name, device, encode_template, track)')
    return backend


# Engine options (precision, engine cache folder, build if missing) each built-in backend
# takes. A caller such as the node passes them whatever the backend; a backend that does not
# take one does not get it.
ENGINE_OPTIONS = {'onnxruntime': ('precision', 'cache_dir'), 'torch': (),
                  'tensorrt': ('precision', 'cache_dir', 'build')}


def unavailable_reason(name: str, device: str = '') -> str:
    """
    Say why backend ``name`` cannot run here ('' when it can).

    For tensorrt: TensorRT 10 and the CUDA bindings (cuda-python or pycuda) must import and,
    when ``device`` is given, that CUDA device must open. The others need their module.
    """
    if name == 'tensorrt':
        from .cuda import missing_bindings, usable_device
        from .engine_build import import_tensorrt
        try:
            import_tensorrt()
        except BackendError as exc:
            return str(exc)
        missing = missing_bindings()
        if missing:
            return f'tensorrt imports, but {missing}'
        return (usable_device(device) or '') if device else ''
    module = {'onnxruntime': 'onnxruntime', 'torch': 'torch'}[name]
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means 'not available'
        return f'{module} cannot be imported ({type(exc).__name__}: {exc})'
    return ''


def available(name: str) -> bool:
    """Tell whether backend ``name``'s runtime (for tensorrt: and CUDA bindings) imports."""
    return not unavailable_reason(name)


@dataclass(frozen=True)
class BackendChoice:
    """The backend and device a request resolves to, and why."""

    name: str
    device: str
    reason: str


def _onnxruntime_device(device: str) -> Tuple[str, str]:
    """Pick ``device`` for ONNX Runtime if it has GPU providers, else the CPU (and why)."""
    if device == 'cpu':
        return 'cpu', ''
    from .onnxruntime_backend import choose_providers
    try:
        import onnxruntime as ort
        choose_providers(device, ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - no onnxruntime-gpu: run on the CPU
        return 'cpu', f'; ONNX Runtime runs on the CPU ({exc})'
    return device, ''


def choose_backend(name: str, device: str = 'cpu') -> BackendChoice:
    """
    Resolve ``name`` on ``device``; 'auto' picks the best backend that can run here.

    'auto' on a GPU device is tensorrt when TensorRT, the CUDA bindings and the device are
    usable, else onnxruntime (on the GPU when onnxruntime-gpu is installed, else on the CPU);
    on the CPU it is onnxruntime. ``reason`` says why, for the log.
    """
    if name != 'auto':
        if name not in BACKENDS:
            raise BackendError(f'unknown backend {name!r}; choose one of '
                               f'{["auto", *BACKENDS]} or a plugin package.module:factory')
        return BackendChoice(name, device, f'backend {name} asked for')
    if device == 'cpu':
        return BackendChoice('onnxruntime', 'cpu', 'auto on the CPU: onnxruntime')
    why_not = unavailable_reason('tensorrt', device)
    if not why_not:
        return BackendChoice('tensorrt', device, f'auto on {device}: TensorRT is usable')
    ort_device, note = _onnxruntime_device(device)
    return BackendChoice('onnxruntime', ort_device,
                         f'auto on {device}: onnxruntime, because {why_not}{note}')


def resolve_name(name: str, device: str = 'cpu') -> str:
    """Return the backend name that 'auto' (or ``name``) resolves to on ``device``."""
    return choose_backend(name, device).name


def create_backend(name: str, spec: ModelSpec, device: str = 'cpu', **options) -> Backend:
    """
    Create backend ``name`` for a model.

    ``name`` is 'auto', 'onnxruntime', 'torch', 'tensorrt' or a plugin 'package.module:factory'.
    The engine options (``ENGINE_OPTIONS``: precision, cache_dir, build) reach only the
    backends that take them; when 'auto' falls back from TensorRT, int8 falls back to fp32.
    """
    if ':' in name:
        return _create_plugin(name, spec, device, **options)
    choice = choose_backend(name, device)
    LOG.info('backend %s on %s (%s)', choice.name, choice.device, choice.reason)
    engine_options = ENGINE_OPTIONS[choice.name]
    options = {k: v for k, v in options.items()
               if k in engine_options or not any(k in o for o in ENGINE_OPTIONS.values())}
    if name == 'auto' and choice.name != 'tensorrt' and options.get('precision') == 'int8':
        LOG.warning('precision int8 needs the tensorrt backend; %s runs fp32', choice.name)
        del options['precision']
    return BACKENDS[choice.name](spec, choice.device, **options)
