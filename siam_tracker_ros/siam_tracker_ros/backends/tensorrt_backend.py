"""TensorRT backend (TensorRT 10 name-based API), for Jetson (JetPack 6) and desktop GPUs.

Small and conventional on purpose; it cannot run without an NVIDIA GPU:

* one engine per ONNX graph of the model (``template``/``search`` or ``backbone``/``head``),
  taken from the engine cache or built there (``engine_build``: FP32/FP16; INT8 engines are
  built beforehand by ``siam-model build-engine --int8 --calib FRAMES``);
* device and pinned host buffers allocated once per engine, addresses bound once with
  ``set_tensor_address``; one CUDA stream; ``execute_async_v3``;
* outputs are copied out of the reused host buffers before they are returned (a later call
  overwrites the buffers).

CUDA is reached through cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in older
releases) when importable, else pycuda. A zero-code alternative on a GPU is the onnxruntime
backend with device ``cuda``: it uses ONNX Runtime's TensorRT / CUDA execution providers when
the installed onnxruntime-gpu has them.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.manifest import ModelSpec
from .base import BackendError, Features, as_features

LOG = logging.getLogger(__name__)


def parse_device(device: str) -> int:
    """CUDA device index of 'cuda', 'cuda:N', 'gpu' or 'gpu:N'; BackendError for anything else."""
    text = str(device or '').strip().lower()
    head, _, index = text.partition(':')
    if head not in ('cuda', 'gpu'):
        raise BackendError(f'the tensorrt backend runs on an NVIDIA GPU; device {device!r} is '
                           'not one (use cuda or cuda:N, or the onnxruntime backend on a CPU)')
    if not index:
        return 0
    if not index.isdigit():
        raise BackendError(f'bad CUDA device {device!r}; use cuda:N with N an integer')
    return int(index)


# ----------------------------------------------------------------------------------------------
# CUDA access: cuda-python first, pycuda second

class _CudaPython:
    """CUDA runtime API through cuda-python (uses the device's primary context)."""

    library = 'cuda-python'

    def __init__(self, device: int):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self._rt = cudart
        self.device = device
        self._pinned: List[int] = []
        self._call(cudart.cudaSetDevice(device))

    def _call(self, result):
        err, rest = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendError(f'CUDA runtime error {err}')
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    @contextlib.contextmanager
    def active(self):
        """Make the device current for this thread (the runtime API needs only the device)."""
        self._call(self._rt.cudaSetDevice(self.device))
        yield

    def device_name(self) -> str:
        prop = self._call(self._rt.cudaGetDeviceProperties(self.device))
        name = prop.name.decode(errors='replace') if isinstance(prop.name, bytes) else prop.name
        return f'{name.strip(chr(0)).strip()} (sm_{prop.major}{prop.minor})'

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._rt.cudaFree(ptr)

    def free_host(self, array: np.ndarray) -> None:
        ptr = array.ctypes.data
        if ptr in self._pinned:
            self._pinned.remove(ptr)
            self._rt.cudaFreeHost(ptr)

    def host_empty(self, shape: Tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        ptr = int(self._call(self._rt.cudaMallocHost(max(count * dtype.itemsize, 1))))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
        self._pinned.append(ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def stream(self) -> int:
        return int(self._call(self._rt.cudaStreamCreate()))

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int = 0) -> None:
        self._call(self._rt.cudaMemcpyAsync(
            dst, src.ctypes.data, src.nbytes,
            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not stream:
            self.synchronize(0)

    def copy_to_host(self, dst: np.ndarray, src: int, nbytes: int, stream: int) -> None:
        self._call(self._rt.cudaMemcpyAsync(
            dst.ctypes.data, src, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            stream))

    def synchronize(self, stream: int) -> None:
        self._call(self._rt.cudaStreamSynchronize(stream))


class _PyCuda:
    """The same operations through pycuda, with its primary context pushed per call."""

    library = 'pycuda'

    def __init__(self, device: int):
        import pycuda.driver as drv
        drv.init()
        self._drv = drv
        self.device = device
        self._dev = drv.Device(device)
        self._ctx = self._dev.retain_primary_context()
        self._keep: List[object] = []
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
        major, minor = self._dev.compute_capability()
        return f'{self._dev.name().strip()} (sm_{major}{minor})'

    def malloc(self, nbytes: int) -> int:
        with self.active():
            mem = self._drv.mem_alloc(max(int(nbytes), 1))
        self._keep.append(mem)
        return int(mem)

    def free(self, ptr: int) -> None:
        for mem in list(self._keep):
            if int(mem) == ptr:
                self._keep.remove(mem)
                with self.active():
                    mem.free()

    def free_host(self, array: np.ndarray) -> None:
        """Page-locked arrays are released by pycuda when collected."""

    def host_empty(self, shape: Tuple[int, ...], dtype) -> np.ndarray:
        with self.active():
            return self._drv.pagelocked_empty(shape, np.dtype(dtype))

    def stream(self) -> int:
        with self.active():
            s = self._drv.Stream()
        self._streams[s.handle] = s
        return int(s.handle)

    def copy_to_device(self, dst: int, src: np.ndarray, stream: int = 0) -> None:
        if stream:
            self._drv.memcpy_htod_async(dst, src, self._streams[stream])
        else:
            with self.active():
                self._drv.memcpy_htod(dst, src)

    def copy_to_host(self, dst: np.ndarray, src: int, nbytes: int, stream: int) -> None:
        view = dst.reshape(-1).view(np.uint8)[:nbytes]
        self._drv.memcpy_dtoh_async(view, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()


_CUDA: Dict[int, object] = {}


def cuda_api(device: int = 0):
    """The process-wide CUDA helper for ``device`` (cuda-python, else pycuda)."""
    if device in _CUDA:
        return _CUDA[device]
    errors = []
    for cls in (_CudaPython, _PyCuda):
        try:
            api = cls(device)
        except ImportError as exc:
            errors.append(f'{cls.library}: {exc}')
            continue
        except Exception as exc:  # noqa: BLE001 - driver errors come in several types
            raise BackendError(f'CUDA device {device} is not usable through {cls.library}: '
                               f'{exc}') from exc
        _CUDA[device] = api
        return api
    raise BackendError('neither cuda-python nor pycuda is importable (' + '; '.join(errors) +
                       '); install one: pip install "cuda-python>=12,<13" (CUDA 12, as on '
                       'JetPack 6) or pip install pycuda')


# ----------------------------------------------------------------------------------------------
# one engine

class EngineRunner:
    """A deserialized engine with its execution context and buffers, all made once."""

    def __init__(self, trt, engine_bytes: bytes, cuda, stream: int, label: str = 'engine'):
        self.label = label
        self._trt = trt
        self._cuda = cuda
        self._stream = stream
        with cuda.active():
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise BackendError(f'TensorRT cannot load the {label} engine (built by another '
                                   'TensorRT version or for another GPU?); rebuild it with '
                                   '`siam-model build-engine MODEL --force`')
            self.context = self.engine.create_execution_context()
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self._dynamic: Dict[str, bool] = {}
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, int] = {}
        with cuda.active():
            for name in self.inputs + self.outputs:  # inputs first: outputs are sized from them
                shape = tuple(self.engine.get_tensor_shape(name))
                self._dynamic[name] = any(d < 0 for d in shape)
                if self._dynamic[name]:
                    shape = self._max_shape(name, name in self.inputs)
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                self._host[name] = cuda.host_empty(shape, dtype)
                self._device[name] = cuda.malloc(self._host[name].nbytes)
                self.context.set_tensor_address(name, self._device[name])

    def _max_shape(self, name: str, is_input: bool) -> Tuple[int, ...]:
        if is_input:
            return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
        # An output's largest shape follows from the largest inputs.
        for inp in self.inputs:
            if self._dynamic.get(inp):
                self.context.set_input_shape(inp, self._host[inp].shape)
        shape = tuple(self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BackendError(f'{self.label}: cannot size output {name} {shape}')
        return shape

    def close(self) -> None:
        """Release the device and host buffers (the runner is unusable afterwards)."""
        for name, ptr in self._device.items():
            self._cuda.free(ptr)
            self._cuda.free_host(self._host[name])
        self._device, self._host = {}, {}
        self.context = None
        self.engine = None

    def run(self, feeds: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Inputs in engine order -> copies of the outputs, in engine order."""
        if len(feeds) != len(self.inputs):
            raise BackendError(f'{self.label} takes {len(self.inputs)} inputs {self.inputs}, '
                               f'got {len(feeds)}')
        cuda, stream = self._cuda, self._stream
        with cuda.active():
            for name, array in zip(self.inputs, feeds):
                host = self._host[name]
                array = np.asarray(array)
                if self._dynamic[name]:
                    if array.size > host.size:
                        raise BackendError(f'{self.label}: input {name} {array.shape} exceeds '
                                           f'the engine profile {host.shape}')
                    self.context.set_input_shape(name, array.shape)
                    view = host.reshape(-1)[:array.size].reshape(array.shape)
                elif array.shape != host.shape:
                    raise BackendError(f'{self.label}: input {name} must be {host.shape}, got '
                                       f'{array.shape}')
                else:
                    view = host
                np.copyto(view, array, casting='same_kind')
                cuda.copy_to_device(self._device[name], view, stream)
            if not self.context.execute_async_v3(stream):
                raise BackendError(f'{self.label}: TensorRT execution failed')
            shapes = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                host = self._host[name]
                nbytes = int(np.prod(shape)) * host.dtype.itemsize
                cuda.copy_to_host(host, self._device[name], nbytes, stream)
                shapes.append(shape)
            cuda.synchronize(stream)
        # Copy out of the reused buffers before returning.
        return [np.array(self._host[name].reshape(-1)[:int(np.prod(shape))].reshape(shape),
                         dtype=np.float32)
                for name, shape in zip(self.outputs, shapes)]


# ----------------------------------------------------------------------------------------------
# the backend

class TensorRTBackend:
    """Backend over two TensorRT engines built from the model's two ONNX graphs."""

    name = 'tensorrt'

    def __init__(self, spec: ModelSpec, device: str = 'cuda', precision: str = 'fp16',
                 cache_dir=None, build: bool = True):
        from . import engine_build as eb
        trt = eb.import_tensorrt()
        index = parse_device('cuda' if device in (None, '', 'auto') else device)
        self.spec = spec
        self.device = f'cuda:{index}'
        self.precision = precision
        cuda = cuda_api(index)
        self.cuda_library = cuda.library
        info = eb.RuntimeInfo(str(trt.__version__), cuda.device_name())
        self.engines = eb.ensure_engines(spec, precision, info=info, cache_dir=cache_dir,
                                         allow_build=build)
        with cuda.active():
            stream = cuda.stream()
        first, second = spec.graph_roles
        self._first = EngineRunner(trt, self.engines[first].path.read_bytes(), cuda, stream,
                                   f'{spec.name} {first}')
        self._second = EngineRunner(trt, self.engines[second].path.read_bytes(), cuda, stream,
                                    f'{spec.name} {second}')
        if len(self._second.outputs) != 2:
            raise BackendError(f'{spec.name} {second} engine has outputs '
                               f'{self._second.outputs}; expected (cls, reg)')
        self._normalise = (tuple(spec.input_mean) != (0.0, 0.0, 0.0)
                           or tuple(spec.input_std) != (1.0, 1.0, 1.0))
        self._mean = np.asarray(spec.input_mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(spec.input_std, np.float32).reshape(1, 3, 1, 1)
        inputs = self._second.inputs
        if spec.layout == 'backbone_head':
            self._search_index = 1
        else:
            self._search_index = inputs.index('search') if 'search' in inputs else 0
        self._feature_inputs = [n for i, n in enumerate(inputs) if i != self._search_index]

    def close(self) -> None:
        """Release the engines' GPU buffers."""
        self._first.close()
        self._second.close()

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        if self._normalise:
            crop = (crop - self._mean) / self._std
        return np.ascontiguousarray(crop, dtype=np.float32)

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop -> features (the template/backbone engine's outputs)."""
        out = self._first.run([self._prepare(crop)])
        if self.spec.layout == 'template_search' and \
                set(self._first.outputs) == set(self._feature_inputs):
            # Same names on both sides: order the features like the search graph takes them.
            by_name = dict(zip(self._first.outputs, out))
            out = [by_name[n] for n in self._feature_inputs]
        return as_features(out)

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop -> (cls, reg)."""
        search = self._prepare(search_crop)
        if self.spec.layout == 'backbone_head':
            search = self._first.run([search])[0]
        feeds: List[Optional[np.ndarray]] = list(features)
        feeds.insert(self._search_index, search)
        cls, reg = self._second.run(feeds)
        return cls, reg
