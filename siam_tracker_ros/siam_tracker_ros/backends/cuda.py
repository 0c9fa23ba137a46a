"""
CUDA through cuda-python or pycuda, shared by the TensorRT backend and the engine builder.

One helper per device (``cuda_api``) with the few operations TensorRT needs from the host side:
make the device current on the calling thread (``active``), device and page-locked host
memory, streams, copies and synchronisation. cuda-python (``cuda.bindings.runtime``, or
``cuda.cudart`` before 12.6) is tried first, pycuda second. JetPack 6 ships neither: without
them the TensorRT backend cannot run (``CudaUnavailable``) and ``backend: auto`` falls back to
ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import BackendError

LOG = logging.getLogger(__name__)

INSTALL_HINT = ('install one: pip install "cuda-python>=12,<13" (CUDA 12, as on JetPack 6) '
                'or pip install pycuda')


class CudaUnavailable(BackendError):
    """TensorRT, the CUDA Python bindings or an NVIDIA GPU are missing on this machine."""


def parse_device(device: str) -> int:
    """Return the CUDA device index of 'cuda', 'cuda:N', 'gpu' or 'gpu:N' (else raise)."""
    text = str(device or '').strip().lower()
    head, _, index = text.partition(':')
    if head not in ('cuda', 'gpu'):
        raise CudaUnavailable(f'the tensorrt backend runs on an NVIDIA GPU; device {device!r} '
                              'is not one (use cuda or cuda:N, or the onnxruntime backend on a '
                              'CPU)')
    if not index:
        return 0
    if not index.isdigit():
        raise CudaUnavailable(f'bad CUDA device {device!r}; use cuda:N with N an integer')
    return int(index)


def _import_cudart():
    try:
        return importlib.import_module('cuda.bindings.runtime')
    except ImportError:
        return importlib.import_module('cuda.cudart')  # cuda-python < 12.6


def missing_bindings() -> str:
    """Say why neither cuda-python nor pycuda imports ('' when one does; opens no device)."""
    errors = []
    for library, load in (('cuda-python', _import_cudart),
                          ('pycuda', lambda: importlib.import_module('pycuda.driver'))):
        try:
            load()
            return ''
        except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for a broken install
            errors.append(f'{library}: {type(exc).__name__}: {exc}')
    return ('neither cuda-python nor pycuda is importable (' + '; '.join(errors) + '); '
            + INSTALL_HINT)


class CudaPython:
    """CUDA runtime API through cuda-python (the device's primary context)."""

    library = 'cuda-python'

    def __init__(self, device: int):
        self._rt = _import_cudart()
        self.device = device
        self._pinned: Dict[int, int] = {}
        self._call('cudaSetDevice', self._rt.cudaSetDevice(device))

    def _call(self, what: str, result):
        err, rest = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendError(f'CUDA {what} failed on device {self.device}: {err}')
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    @contextlib.contextmanager
    def active(self):
        """Make the device current on this thread (the runtime API needs only the device)."""
        self._call('cudaSetDevice', self._rt.cudaSetDevice(self.device))
        yield

    def device_name(self) -> str:
        """Return the GPU name and compute capability, e.g. 'Orin (sm_87)'."""
        prop = self._call('cudaGetDeviceProperties', self._rt.cudaGetDeviceProperties(self.device))
        name = prop.name.decode(errors='replace') if isinstance(prop.name, bytes) else prop.name
        return f'{name.strip(chr(0)).strip()} (sm_{prop.major}{prop.minor})'

    def malloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` (at least 1) of device memory; return its address."""
        return int(self._call('cudaMalloc', self._rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        """Free device memory from ``malloc``."""
        self._call('cudaFree', self._rt.cudaFree(ptr))

    def host_empty(self, shape: Tuple[int, ...], dtype) -> np.ndarray:
        """Allocate a page-locked host array (free it with ``free_host``)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        nbytes = max(count * dtype.itemsize, 1)
        ptr = int(self._call('cudaMallocHost', self._rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        self._pinned[ptr] = nbytes
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free_host(self, array: np.ndarray) -> None:
        """Free a page-locked array from ``host_empty`` (the array must not be used after)."""
        ptr = array.ctypes.data
        if self._pinned.pop(ptr, None) is not None:
            self._call('cudaFreeHost', self._rt.cudaFreeHost(ptr))

    def stream(self) -> int:
        """Create a CUDA stream; return its handle as an int."""
        return int(self._call('cudaStreamCreate', self._rt.cudaStreamCreate()))

    def destroy_stream(self, stream: int) -> None:
        """Destroy a stream from ``stream``."""
        self._call('cudaStreamDestroy', self._rt.cudaStreamDestroy(stream))

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int = 0) -> None:
        """Copy ``src`` to device address ``dst``; on stream 0 the copy is complete on return."""
        self._call('cudaMemcpyAsync', self._rt.cudaMemcpyAsync(
            dst, src.ctypes.data, src.nbytes,
            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not stream:
            self.synchronize(0)

    def copy_to_host(self, dst: np.ndarray, src: int, nbytes: int, stream: int) -> None:
        """Queue a copy of ``nbytes`` from device address ``src`` into ``dst``."""
        if nbytes > dst.nbytes:
            raise BackendError(f'copy of {nbytes} bytes into a {dst.nbytes}-byte host buffer')
        self._call('cudaMemcpyAsync', self._rt.cudaMemcpyAsync(
            dst.ctypes.data, src, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            stream))

    def synchronize(self, stream: int) -> None:
        """Wait until everything queued on ``stream`` is done."""
        self._call('cudaStreamSynchronize', self._rt.cudaStreamSynchronize(stream))


class PyCuda:
    """The same operations through pycuda, with its primary context pushed per call."""

    library = 'pycuda'

    def __init__(self, device: int):
        import pycuda.driver as drv
        drv.init()
        self._drv = drv
        self.device = device
        self._dev = drv.Device(device)
        self._ctx = self._dev.retain_primary_context()
        self._keep: Dict[int, object] = {}
        self._host: List[np.ndarray] = []
        self._streams: Dict[int, object] = {}

    @contextlib.contextmanager
    def active(self):
        """Push the primary context for the duration of a call (any thread)."""
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def device_name(self) -> str:
        """Return the GPU name and compute capability, e.g. 'Orin (sm_87)'."""
        major, minor = self._dev.compute_capability()
        return f'{self._dev.name().strip()} (sm_{major}{minor})'

    def malloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` (at least 1) of device memory; return its address."""
        with self.active():
            mem = self._drv.mem_alloc(max(int(nbytes), 1))
        self._keep[int(mem)] = mem
        return int(mem)

    def free(self, ptr: int) -> None:
        """Free device memory from ``malloc``."""
        mem = self._keep.pop(ptr, None)
        if mem is not None:
            with self.active():
                mem.free()

    def host_empty(self, shape: Tuple[int, ...], dtype) -> np.ndarray:
        """Allocate a page-locked host array (free it with ``free_host``)."""
        with self.active():
            array = self._drv.pagelocked_empty(shape, np.dtype(dtype))
        self._host.append(array)
        return array

    def free_host(self, array: np.ndarray) -> None:
        """Free a page-locked array from ``host_empty`` (the array must not be used after)."""
        for i, held in enumerate(self._host):
            if held is array:
                del self._host[i]
                if hasattr(array.base, 'free'):
                    with self.active():
                        array.base.free()
                return

    def stream(self) -> int:
        """Create a CUDA stream; return its handle as an int."""
        with self.active():
            s = self._drv.Stream()
        self._streams[int(s.handle)] = s
        return int(s.handle)

    def destroy_stream(self, stream: int) -> None:
        """Forget a stream; pycuda destroys it when collected."""
        with self.active():
            self._streams.pop(stream, None)

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int = 0) -> None:
        """Copy ``src`` to device address ``dst``; on stream 0 the copy is complete on return."""
        with self.active():
            if stream:
                self._drv.memcpy_htod_async(dst, src, self._streams[stream])
            else:
                self._drv.memcpy_htod(dst, src)

    def copy_to_host(self, dst: np.ndarray, src: int, nbytes: int, stream: int) -> None:
        """Queue a copy of ``nbytes`` from device address ``src`` into ``dst``."""
        if nbytes > dst.nbytes:
            raise BackendError(f'copy of {nbytes} bytes into a {dst.nbytes}-byte host buffer')
        view = dst.reshape(-1).view(np.uint8)[:nbytes]
        with self.active():
            self._drv.memcpy_dtoh_async(view, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        """Wait until everything queued on ``stream`` is done."""
        with self.active():
            self._streams[stream].synchronize()


_CUDA: Dict[int, object] = {}


def cuda_api(device: int = 0):
    """
    Return the process-wide CUDA helper for ``device`` (cuda-python, else pycuda).

    CudaUnavailable when neither binding is importable or the device cannot be opened.
    """
    if device in _CUDA:
        return _CUDA[device]
    errors = []
    for cls in (CudaPython, PyCuda):
        try:
            api = cls(device)
        except ImportError as exc:
            errors.append(f'{cls.library}: {exc}')
            continue
        except Exception as exc:  # noqa: BLE001 - driver errors come in several types
            raise CudaUnavailable(f'CUDA device {device} is not usable through {cls.library}: '
                                  f'{exc}') from exc
        _CUDA[device] = api
        LOG.debug('CUDA device %d through %s', device, cls.library)
        return api
    raise CudaUnavailable('neither cuda-python nor pycuda is importable (' + '; '.join(errors)
                          + '); ' + INSTALL_HINT)


def forget_devices() -> None:
    """Drop the cached helpers (a test that swaps the CUDA modules calls this)."""
    _CUDA.clear()


def usable_device(device: str) -> Optional[str]:
    """Return why ``device`` does not open through the CUDA bindings (None when it does)."""
    try:
        cuda_api(parse_device(device))
    except BackendError as exc:
        return str(exc)
    return None
