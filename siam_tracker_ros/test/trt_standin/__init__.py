"""
Stand-in ``tensorrt`` and ``cuda`` (cuda-python) modules for the TensorRT tests, and tiny models.

``installed()`` puts the stand-ins on ``sys.path`` for the duration of a ``with`` block only
(``cuda=False`` leaves out the CUDA bindings and hides any real ones), and restores
``sys.modules`` and the backend's CUDA helper cache afterwards. See ``modules/tensorrt`` for
what the TensorRT stand-in implements and checks.
"""
import contextlib
import importlib
from pathlib import Path
import sys
from types import SimpleNamespace

MODULES = Path(__file__).resolve().parent / 'modules'
_NAMES = ('tensorrt', 'cuda', 'pycuda', '_standin_gpu')


def _ours(name: str) -> bool:
    return any(name == n or name.startswith(n + '.') for n in _NAMES)


@contextlib.contextmanager
def installed(cuda: bool = True):
    """
    Make ``import tensorrt`` (and with ``cuda`` ``from cuda import cudart``) the stand-ins.

    Yields a namespace with ``trt`` (the tensorrt module), ``gpu`` (the simulated GPU) and
    ``cudart`` (None without ``cuda``).
    """
    from siam_tracker_ros.backends import cuda as backend_cuda

    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(MODULES))
    backend_cuda.forget_devices()
    try:
        if not cuda:
            sys.modules['cuda'] = None  # ImportError for cuda and cuda.*
            sys.modules['pycuda'] = None
        trt = importlib.import_module('tensorrt')
        gpu = importlib.import_module('_standin_gpu')
        cudart = importlib.import_module('cuda.bindings.runtime') if cuda else None
        yield SimpleNamespace(trt=trt, gpu=gpu, cudart=cudart, controls=trt.STANDIN)
    finally:
        backend_cuda.forget_devices()
        sys.path.remove(str(MODULES))
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
