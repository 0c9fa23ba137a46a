"""
TensorRT backend (TensorRT 10 name-based API), for Jetson (JetPack 6) and desktop GPUs.

Small and conventional on purpose; it cannot run without an NVIDIA GPU:

* one engine per ONNX graph of the model (``template``/``search`` or ``backbone``/``head``,
  plus ``fusion`` for a model with a template-fusion graph), taken from the engine cache or
  built there (``engine_build``: FP32/FP16; INT8 engines are built beforehand by
  ``siam-model build-engine --int8 --calib FRAMES``, the fusion graph's as FP16); an engine
  that TensorRT cannot load is rebuilt when building is allowed;
* engine inputs and outputs are bound by the ONNX names recorded when the engine was built
  (TensorRT documents no order of an engine's I/O tensors);
* device and pinned host buffers allocated once per engine, addresses bound once with
  ``set_tensor_address``; one CUDA stream; ``execute_async_v3``;
* outputs are copied out of the reused host buffers before they are returned (a later call
  overwrites the buffers); ``close()`` frees the buffers and the stream.

CUDA is reached through ``backends.cuda`` (cuda-python, else pycuda). A zero-code alternative
on a GPU is the onnxruntime backend with device ``cuda``: it uses ONNX Runtime's TensorRT /
CUDA execution providers when the installed onnxruntime-gpu has them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import engine_build as eb
from .base import (as_features, BackendError, Features, fusion_feeds, neighbour_features,
                   no_fusion_error)
from .cuda import cuda_api, parse_device
from ..core.manifest import ModelSpec, temporal_inputs, TEMPORAL_OUTPUT

__all__ = ['EngineLoadError', 'EngineRunner', 'TensorRTBackend', 'parse_device']

LOG = logging.getLogger(__name__)


class EngineLoadError(BackendError):
    """TensorRT cannot load an engine file (another TensorRT or GPU, or damaged): rebuild it."""


# ----------------------------------------------------------------------------------------------
# one engine

class EngineRunner:
    """
    A deserialized engine with its execution context and buffers, all made once.

    ``inputs`` and ``outputs`` are the graph's tensor names in ONNX order (from ``io``); every
    buffer is bound by name.
    """

    def __init__(self, trt, runtime, engine_bytes: bytes, io: eb.EngineIO, cuda, stream: int,
                 label: str = 'engine'):
        self.label = label
        self._cuda = cuda
        self._stream = stream
        self._dynamic: Dict[str, bool] = {}
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, int] = {}
        self.context = None
        with cuda.active():
            self.engine = runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise EngineLoadError(f'TensorRT cannot load the {label} engine (built by '
                                      'another TensorRT version or for another GPU, or '
                                      'damaged)')
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f'{label}: TensorRT could not create an execution context '
                               '(out of GPU memory?)')
        modes = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            modes[name] = self.engine.get_tensor_mode(name)
        have_in = {n for n, m in modes.items() if m == trt.TensorIOMode.INPUT}
        have_out = {n for n, m in modes.items() if m == trt.TensorIOMode.OUTPUT}
        if have_in != set(io.inputs) or have_out != set(io.outputs):
            raise EngineLoadError(f'the {label} engine has inputs {sorted(have_in)} and '
                                  f'outputs {sorted(have_out)}, its record says '
                                  f'{list(io.inputs)} and {list(io.outputs)}')
        self.inputs: List[str] = list(io.inputs)
        self.outputs: List[str] = list(io.outputs)
        try:
            with cuda.active():
                for name in self.inputs + self.outputs:  # inputs first: outputs sized from them
                    shape = tuple(self.engine.get_tensor_shape(name))
                    self._dynamic[name] = any(d < 0 for d in shape)
                    if self._dynamic[name]:
                        shape = self._max_shape(name, name in self.inputs)
                    dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                    self._host[name] = cuda.host_empty(shape, dtype)
                    self._device[name] = cuda.malloc(self._host[name].nbytes)
                    if not self.context.set_tensor_address(name, self._device[name]):
                        raise BackendError(f'{label}: TensorRT refused the buffer of {name}')
        except BaseException:
            self.close()
            raise

    def _set_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            lo, _, hi = (tuple(d) for d in self.engine.get_tensor_profile_shape(name, 0))
            raise BackendError(f'{self.label}: TensorRT rejected shape {tuple(shape)} for input '
                               f'{name} (the engine takes {lo} to {hi}); crops must have the '
                               "model's exemplar/instance sizes")

    def _max_shape(self, name: str, is_input: bool) -> Tuple[int, ...]:
        if is_input:
            return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
        # An output's largest shape follows from the largest inputs.
        for inp in self.inputs:
            if self._dynamic.get(inp):
                self._set_shape(inp, self._host[inp].shape)
        shape = tuple(self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BackendError(f'{self.label}: cannot size output {name} {shape}')
        return shape

    def shape(self, name: str) -> Tuple[int, ...]:
        """Shape of the buffer of tensor ``name`` (the largest one for a dynamic input)."""
        return tuple(self._host[name].shape)

    def close(self) -> None:
        """Release the device and host buffers (the runner is unusable afterwards)."""
        with self._cuda.active():
            for name, ptr in self._device.items():
                self._cuda.free(ptr)
            for host in self._host.values():
                self._cuda.free_host(host)
        self._device, self._host = {}, {}
        self.context = None
        self.engine = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Input name -> array; returns output name -> a copy of the output."""
        if self.context is None:
            raise BackendError(f'{self.label}: the engine was closed')
        if set(feeds) != set(self.inputs):
            raise BackendError(f'{self.label} takes inputs {self.inputs}, got {sorted(feeds)}')
        cuda, stream = self._cuda, self._stream
        with cuda.active():
            for name in self.inputs:
                host = self._host[name]
                array = np.asarray(feeds[name])
                if self._dynamic[name]:
                    if array.size > host.size:
                        raise BackendError(f'{self.label}: input {name} {array.shape} exceeds '
                                           f'the engine profile {host.shape}')
                    self._set_shape(name, array.shape)
                    view = host.reshape(-1)[:array.size].reshape(array.shape)
                elif array.shape != host.shape:
                    raise BackendError(f'{self.label}: input {name} must be {host.shape}, got '
                                       f'{array.shape}')
                else:
                    view = host
                np.copyto(view, array, casting='same_kind')
                cuda.copy_to_device(self._device[name], view, stream)
            if not self.context.execute_async_v3(stream):
                raise BackendError(f'{self.label}: TensorRT execution failed (see the TensorRT '
                                   'messages above)')
            shapes = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                host = self._host[name]
                cuda.copy_to_host(host, self._device[name],
                                  int(np.prod(shape)) * host.dtype.itemsize, stream)
                shapes[name] = shape
            cuda.synchronize(stream)
        # Copy out of the reused buffers before returning.
        return {name: np.array(self._host[name].reshape(-1)[:int(np.prod(shape))]
                               .reshape(shape), dtype=np.float32)
                for name, shape in shapes.items()}


# ----------------------------------------------------------------------------------------------
# the backend

class TensorRTBackend:
    """
    Backend over two TensorRT engines built from the model's two ONNX graphs.

    ``precision`` is fp32, fp16 or int8; ``cache_dir`` the engine folder (None or '' for
    the default, see ``engine_build.default_cache_dir``). With ``build`` a missing or unloadable
    fp32/fp16 engine is built (minutes on a Jetson); INT8 engines come from
    ``siam-model build-engine --int8`` only. Call ``close()`` to free the GPU resources.
    """

    name = 'tensorrt'

    def __init__(self, spec: ModelSpec, device: str = 'cuda', precision: str = 'fp16',
                 cache_dir=None, build: bool = True):
        trt = eb.import_tensorrt()
        if precision not in eb.PRECISIONS:
            raise BackendError(f'precision {precision!r} not in {eb.PRECISIONS}')
        index = parse_device('cuda' if device in (None, '', 'auto') else device)
        cuda = cuda_api(index)
        self.spec = spec
        self.device = f'cuda:{index}'
        self.precision = precision
        self.cuda_library = cuda.library
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else \
            eb.default_cache_dir()
        self._cuda = cuda
        self._stream: Optional[int] = None
        self._runtime = None
        self._runners: Dict[str, EngineRunner] = {}
        self._fusion: Optional[EngineRunner] = None
        # The graphs TensorRT builds (the split export when the model's own cannot be built).
        self.model = eb.tensorrt_model(spec, self.cache_dir, allow_export=build)
        self.temporal = spec.temporal_frames
        if (self.model.temporal_frames != self.temporal
                or (spec.has_fusion and not self.model.has_fusion)):
            raise BackendError(f'model {spec.name}: its graphs need a re-export for TensorRT, '
                               'which would drop its learned modules (template fusion, '
                               'temporal search); export it with `siam-model export ... '
                               '--modules` and use that folder')
        self._previous_names = list(temporal_inputs(self.temporal))
        info = eb.RuntimeInfo(str(trt.__version__), cuda.device_name())
        self.engines = eb.ensure_engines(self.model, precision, info=info,
                                         cache_dir=self.cache_dir, allow_build=build,
                                         device=index)
        try:
            with cuda.active():
                self._stream = cuda.stream()
                self._runtime = trt.Runtime(eb.trt_logger(trt))
            for role in eb.engine_roles(self.model):
                self._runners[role] = self._load(trt, role, info, build, index)
            self._bind()
        except BaseException:
            self.close()
            raise

    def _load(self, trt, role: str, info: eb.RuntimeInfo, build: bool,
              index: int) -> EngineRunner:
        label = f'{self.model.name} {role}'
        engine = self.engines[role]
        try:
            return EngineRunner(trt, self._runtime, engine.path.read_bytes(), engine.io,
                                self._cuda, self._stream, label)
        except EngineLoadError as exc:
            if not build or eb.role_precision(role, self.precision) == 'int8':
                command = eb.build_command(self.model, self.precision, self.cache_dir)
                raise BackendError(f'{exc} ({engine.path}); rebuild it: `{command} --force`') \
                    from exc
            LOG.warning('%s (%s): rebuilding it', exc, engine.path)
        self.engines[role] = eb.ensure_engines(self.model, self.precision, info=info,
                                               cache_dir=self.cache_dir, force=True,
                                               roles=[role], device=index)[role]
        engine = self.engines[role]
        return EngineRunner(trt, self._runtime, engine.path.read_bytes(), engine.io,
                            self._cuda, self._stream, label)

    def _bind(self) -> None:
        first, second = (self._runners[r] for r in self.model.graph_roles)
        self._first, self._second = first, second
        self._fusion = self._runners.get('fusion')
        if self._fusion is not None and (set(self._fusion.inputs) != {'zf_initial', 'zf_memory'}
                                         or len(self._fusion.outputs) != 1):
            raise BackendError(f'{self.model.name}: the fusion engine has inputs '
                               f'{self._fusion.inputs} and outputs {self._fusion.outputs}; '
                               "expected ('zf_initial', 'zf_memory') and one output")
        if self.temporal:
            self._bind_temporal()
            return
        if len(first.inputs) != 1 or len(second.outputs) != 2:
            raise BackendError(f'{self.model.name}: graphs with inputs {first.inputs} and '
                               f'outputs {second.outputs}; expected one crop input and '
                               '(cls, reg)')
        inputs = second.inputs
        if self.model.layout == 'backbone_head':
            if len(first.outputs) != 1 or len(inputs) != 2:
                raise BackendError(f'{self.model.name}: head inputs {inputs}; expected '
                                   '(template features, search features)')
            self._search_name = inputs[1]  # the head takes (template, search) features
            self._feature_names = [inputs[0]]
            return
        self._search_name = 'search' if 'search' in inputs else inputs[0]
        feature_inputs = [n for n in inputs if n != self._search_name]
        if set(first.outputs) == set(feature_inputs):
            self._feature_names = list(first.outputs)  # same names on both sides
        elif len(first.outputs) == len(feature_inputs):
            self._feature_names = feature_inputs  # ONNX order on both sides
        else:
            raise BackendError(f'{self.model.name}: template outputs {first.outputs} do not '
                               f'match the search inputs {feature_inputs}')

    def _bind_temporal(self) -> None:
        """Bind a temporal search graph: search, zf, xf_prev1.. -> cls, reg, xf (by name)."""
        first, second = self._first, self._second
        inputs, outputs = second.inputs, second.outputs
        missing = [n for n in ['search', *self._previous_names] if n not in inputs]
        if len(first.inputs) != 1 or missing or TEMPORAL_OUTPUT not in outputs \
                or len(outputs) != 3:
            raise BackendError(f'{self.model.name}: a temporal search graph takes search, the '
                               f'template features and {self._previous_names} and gives cls, '
                               f'reg and {TEMPORAL_OUTPUT!r}; this one takes {inputs} and '
                               f'gives {outputs}')
        self._search_name = 'search'
        feature_inputs = [n for n in inputs if n != 'search' and n not in self._previous_names]
        if set(first.outputs) != set(feature_inputs):
            raise BackendError(f'{self.model.name}: template outputs {first.outputs} do not '
                               f'match the search inputs {feature_inputs}')
        self._feature_names = list(first.outputs)
        self._head_outputs = [n for n in outputs if n != TEMPORAL_OUTPUT]
        self._previous_zeros = [np.zeros(second.shape(n), np.float32)
                                for n in self._previous_names]

    def close(self) -> None:
        """Release the engines' GPU buffers and the CUDA stream (idempotent)."""
        if self._stream is not None:
            with self._cuda.active():
                self._cuda.synchronize(self._stream)  # nothing queued may touch freed memory
        runners, self._runners = self._runners, {}
        for runner in runners.values():
            runner.close()
        if self._stream is not None:
            with self._cuda.active():
                self._cuda.destroy_stream(self._stream)
            self._stream = None
        self._runtime = None

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        return eb.prepare_input(self.spec, crop)

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop -> features (the template/backbone graph's outputs, ONNX order)."""
        first = self._first
        out = first.run({first.inputs[0]: self._prepare(crop)})
        return as_features([out[n] for n in first.outputs])

    @property
    def has_fusion(self) -> bool:
        """Whether the model has a template-fusion engine."""
        return self._fusion is not None

    def fuse_templates(self, initial: Features, memory: Sequence[Features]) -> Features:
        """Fuse the initial template features with N samples (oldest first)."""
        if not self.has_fusion:
            raise no_fusion_error(self.model.name)
        zf, mem = fusion_feeds(initial, memory, self.model.fusion_memory)
        out = self._fusion.run({'zf_initial': zf, 'zf_memory': mem})
        return as_features([out[self._fusion.outputs[0]]])

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop -> (cls, reg); a temporal model's run with no earlier frame."""
        if self.temporal:
            return self.track_temporal(features, search_crop, ())[:2]
        if len(features) != len(self._feature_names):
            raise BackendError(f'{self.model.name} takes {len(self._feature_names)} template '
                               f'features, got {len(features)}')
        search = self._prepare(search_crop)
        if self.model.layout == 'backbone_head':
            first = self._first
            search = first.run({first.inputs[0]: search})[first.outputs[0]]
        feeds = dict(zip(self._feature_names, features))
        feeds[self._search_name] = search
        out = self._second.run(feeds)
        cls_name, reg_name = self._second.outputs
        return out[cls_name], out[reg_name]

    def track_temporal(self, features: Sequence[np.ndarray], search_crop: np.ndarray,
                       previous: Sequence[np.ndarray]
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features + search crop + earlier frames' xf (oldest first) -> (cls, reg, xf)."""
        if not self.temporal:
            raise BackendError(f'model {self.model.name} has no temporal search graph; use '
                               'track()')
        if len(features) != len(self._feature_names):
            raise BackendError(f'{self.model.name} takes {len(self._feature_names)} template '
                               f'features, got {len(features)}')
        feeds = dict(zip(self._feature_names, features))
        feeds[self._search_name] = self._prepare(search_crop)
        neighbours = neighbour_features(previous, self.temporal)
        if neighbours is None:  # frame t stands in for its neighbours: its features first
            feeds.update(zip(self._previous_names, self._previous_zeros))
            xf = self._second.run(feeds)[TEMPORAL_OUTPUT]
            neighbours = (xf,) * self.temporal
        feeds.update(zip(self._previous_names, neighbours))
        out = self._second.run(feeds)
        cls_name, reg_name = self._head_outputs
        return out[cls_name], out[reg_name], out[TEMPORAL_OUTPUT]
