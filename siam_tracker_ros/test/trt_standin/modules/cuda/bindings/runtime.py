"""
Stand-in for cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``).

The functions the TensorRT backend uses, with cuda-python's calling convention: every call
returns a tuple whose first item is a ``cudaError_t``, followed by the results. Arguments are
type-checked as cuda-python checks them (pointers are ints or buffer objects, copy kinds are
``cudaMemcpyKind`` members, streams are ``cudaStream_t``, ints or None). Memory and streams
are simulated by ``_standin_gpu``.
"""
import ctypes
import enum

import _standin_gpu as gpu
import numpy as np


class cudaError_t(enum.IntEnum):
    """CUDA runtime error codes (the subset the stand-in returns)."""

    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    """Copy directions."""

    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """A stream handle; ``int(stream)`` is its address, as in cuda-python."""

    def __init__(self, init_value: int = 0):
        self._handle = int(init_value)

    def __int__(self):
        return self._handle

    def getPtr(self) -> int:
        """Return the handle as an integer."""
        return self._handle

    def __repr__(self):
        return f'<cudaStream_t {self._handle:#x}>'


class cudaDeviceProp:
    """Device properties (the fields the backend reads)."""

    def __init__(self):
        self.name = gpu.DEVICE_NAME + b'\0' * (256 - len(gpu.DEVICE_NAME))
        self.major, self.minor = gpu.CAPABILITY
        self.totalGlobalMem = 8 << 30


def _error(exc: gpu.GpuError) -> cudaError_t:
    return cudaError_t[exc.code]


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'Argument {what!r} is not instance of type (expected int, found '
                        f'{type(value).__name__})')
    return int(value)


def _pointer(value, what: str) -> int:
    """Get an address from an int or a buffer object (cuda-python's void* arguments)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.ctypes.data
    raise TypeError(f'Argument {what!r} must be an int address or a buffer, not '
                    f'{type(value).__name__}')


def _stream(value) -> int:
    if value is None:
        return 0
    if isinstance(value, cudaStream_t):
        return int(value)
    return _int(value, 'stream')


def cudaGetDeviceCount():
    """(err, number of devices)."""
    return cudaError_t.cudaSuccess, gpu.DEVICE_COUNT


def cudaSetDevice(device):
    """(err,): make ``device`` current on the calling thread."""
    try:
        gpu.set_device(_int(device, 'device'))
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaGetDevice():
    """(err, the calling thread's device)."""
    return cudaError_t.cudaSuccess, gpu.current_device()


def cudaGetDeviceProperties(device):
    """(err, cudaDeviceProp)."""
    if not 0 <= _int(device, 'device') < gpu.DEVICE_COUNT:
        return cudaError_t.cudaErrorInvalidDevice, None
    return cudaError_t.cudaSuccess, cudaDeviceProp()


def cudaMalloc(size):
    """(err, device address)."""
    try:
        return cudaError_t.cudaSuccess, gpu.malloc(_int(size, 'size'))
    except gpu.GpuError as exc:
        return _error(exc), 0


def cudaFree(devPtr):
    """(err,)."""
    try:
        gpu.free(_pointer(devPtr, 'devPtr'))
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaMallocHost(size):
    """(err, page-locked host address)."""
    return cudaError_t.cudaSuccess, gpu.malloc_host(_int(size, 'size'))


def cudaFreeHost(ptr):
    """(err,)."""
    try:
        gpu.free_host(_pointer(ptr, 'ptr'))
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaStreamCreate():
    """(err, cudaStream_t)."""
    return cudaError_t.cudaSuccess, cudaStream_t(gpu.stream_create())


def cudaStreamDestroy(stream):
    """(err,)."""
    try:
        gpu.stream_destroy(_stream(stream))
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaStreamSynchronize(stream):
    """(err,): run everything queued on ``stream``."""
    try:
        gpu.synchronize(_stream(stream))
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaMemcpyAsync(dst, src, count, kind, stream):
    """(err,): queue a copy of ``count`` bytes on ``stream``."""
    dst = _pointer(dst, 'dst')
    src = _pointer(src, 'src')
    count = _int(count, 'count')
    if not isinstance(kind, cudaMemcpyKind):
        raise TypeError(f"Argument 'kind' is not instance of type (expected "
                        f"<class 'cudaMemcpyKind'>, found {type(kind).__name__})")
    handle = _stream(stream)
    try:
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            gpu.check_host_range(src, count)
            gpu.check_device_range(dst, count)

            def work():
                gpu.write(dst, ctypes.string_at(src, count))
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            gpu.check_device_range(src, count)
            gpu.check_host_range(dst, count)

            def work():
                ctypes.memmove(dst, gpu.read(src, count), count)
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        gpu.enqueue(handle, work)
    except gpu.GpuError as exc:
        return (_error(exc),)
    return (cudaError_t.cudaSuccess,)


def cudaMemcpy(dst, src, count, kind):
    """(err,): a copy that is complete on return."""
    result = cudaMemcpyAsync(dst, src, count, kind, 0)
    if result[0] == cudaError_t.cudaSuccess:
        return cudaStreamSynchronize(0)
    return result
