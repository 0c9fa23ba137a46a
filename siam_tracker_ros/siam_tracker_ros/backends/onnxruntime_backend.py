"""ONNX Runtime backend, tuned for small CPUs, using CUDA / TensorRT providers when present."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.manifest import ModelSpec
from .base import BackendError, Features, as_features

# Input name of the search crop in the backbone+head graph built by search_graph().
SEARCH_INPUT = 'search'
# Execution providers tried in this order on a GPU device ('cuda', 'cuda:N', 'gpu').
_GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def default_threads() -> int:
    """Intra-op threads of the per-frame (search) session: every core, at most 4.

    Measured on a 2-core machine (NanoTrack v2, ORT 1.31, frames/s of update() on David, bag
    and uav_boat5, OpenCV TrackerNano in the same process): plain tracker 1 thread 345, 2
    threads 473-492; TrackerNano 275-323 on its default 2 threads. Two threads pay only when
    no other ORT thread pool spins beside them, which is why the template session is
    single-threaded (see OnnxRuntimeBackend).
    """
    cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def choose_providers(device: str, available: Sequence[str]) -> List[str]:
    """Execution providers for ``device``: GPU ones first when asked for and present."""
    if device == 'cpu':
        return ['CPUExecutionProvider']
    if not device.startswith(('cuda', 'gpu')):
        raise BackendError(f'unknown device {device!r}; use cpu or cuda[:N]')
    gpu = [p for p in _GPU_PROVIDERS if p in available]
    if not gpu:
        raise BackendError(f'device {device!r} asked for, but this onnxruntime build has no GPU '
                           f'execution provider (available: {list(available)}); install '
                           'onnxruntime-gpu or use device cpu')
    return gpu + ['CPUExecutionProvider']


def search_graph(backbone_path, head_path) -> bytes:
    """Backbone and head joined into one graph: (template features, search crop) -> (cls, reg).

    The head's inputs are (template features, search features); the backbone's output feeds
    the second. Errors name the files, so a corrupt model is reported where it entered.
    """
    import onnx
    from onnx import compose
    try:
        backbone = onnx.load(str(backbone_path))
        head = onnx.load(str(head_path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors come in several types
        raise BackendError(f'cannot read {backbone_path} / {head_path}: {exc}; the files may be '
                           'corrupt: re-import or re-fetch the model') from exc
    head_inputs = [i.name for i in head.graph.input]
    if len(head_inputs) != 2 or len(backbone.graph.output) != 1:
        raise BackendError(f'{head_path} has inputs {head_inputs}; expected (template features, '
                           f'search features), fed by the one output of {backbone_path}')
    backbone = compose.add_prefix(backbone, 'backbone/')
    old_name = backbone.graph.input[0].name
    backbone.graph.input[0].name = SEARCH_INPUT
    for node in backbone.graph.node:
        node.input[:] = [SEARCH_INPUT if n == old_name else n for n in node.input]
    backbone.ir_version = head.ir_version = max(backbone.ir_version, head.ir_version)
    if backbone.opset_import[0].version != head.opset_import[0].version:
        version = max(backbone.opset_import[0].version, head.opset_import[0].version)
        backbone = onnx.version_converter.convert_version(backbone, version)
        head = onnx.version_converter.convert_version(head, version)
    joined = compose.merge_models(backbone, head,
                                  io_map=[(backbone.graph.output[0].name, head_inputs[1])])
    return joined.SerializeToString()


class OnnxRuntimeBackend:
    """Backend over one or two ONNX Runtime sessions (layout backbone_head or template_search)."""

    name = 'onnxruntime'

    def __init__(self, spec: ModelSpec, device: str = 'cpu', threads: Optional[int] = None,
                 optimization: str = 'all'):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError('onnxruntime is not installed: pip install onnxruntime') from exc
        self.spec = spec
        self.device = device
        self.providers = choose_providers(device, ort.get_available_providers())
        levels = {'none': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if optimization not in levels:
            raise BackendError(f'unknown optimization {optimization!r}; use one of '
                               f'{sorted(levels)}')
        self.threads = threads if threads is not None else default_threads()
        if self.threads < 1:
            raise BackendError(f'threads must be >= 1, got {self.threads}')

        def options(intra: int):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = intra
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = levels[optimization]
            return opts

        first, second = spec.graph_roles
        # The template session runs at init and now and then (template update, appearance
        # checks): one thread, so no second pool of spinning workers fights the search
        # session's for the cores (measured: 2 threads in both sessions made the 'update'
        # preset 40 % slower than 1 thread; see default_threads).
        self._first = self._session(ort, options(1), spec.path(first))
        if spec.layout == 'backbone_head':
            # One search session = backbone feeding the head: one run per frame instead of two.
            self._second = self._session(ort, options(self.threads), spec.path(second),
                                         search_graph(spec.path(first), spec.path(second)))
        else:
            self._second = self._session(ort, options(self.threads), spec.path(second))
        self._normalise = (tuple(spec.input_mean) != (0.0, 0.0, 0.0)
                           or tuple(spec.input_std) != (1.0, 1.0, 1.0))
        self._mean = np.asarray(spec.input_mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(spec.input_std, np.float32).reshape(1, 3, 1, 1)
        self._first_in = self._first.get_inputs()[0].name
        outputs = [o.name for o in self._second.get_outputs()]
        if len(outputs) != 2:
            raise BackendError(f'{spec.path(second)} has {len(outputs)} outputs; expected '
                               '(cls, reg)')
        self._outputs = outputs
        second_inputs = [i.name for i in self._second.get_inputs()]
        self._search_name = next((n for n in second_inputs if n in ('search', SEARCH_INPUT)),
                                 second_inputs[0])
        self._feature_names = [n for n in second_inputs if n != self._search_name]

    def _session(self, ort, opts, path, model_bytes: Optional[bytes] = None):
        try:
            return ort.InferenceSession(model_bytes if model_bytes is not None else str(path),
                                        sess_options=opts, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise BackendError(f'onnxruntime cannot load {path}: {exc}; the file may be corrupt: '
                               're-import or re-fetch the model') from exc

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        if self._normalise:
            crop = (crop - self._mean) / self._std
        return np.ascontiguousarray(crop, dtype=np.float32)

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop -> features (all outputs of the first graph)."""
        return as_features(self._first.run(None, {self._first_in: self._prepare(crop)}))

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop -> (cls, reg)."""
        feeds: Dict[str, np.ndarray] = dict(zip(self._feature_names, features))
        feeds[self._search_name] = self._prepare(search_crop)
        cls, reg = self._second.run(self._outputs, feeds)
        return cls, reg
