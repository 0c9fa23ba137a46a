"""ONNX Runtime backend, tuned for small CPUs, using CUDA / TensorRT providers when present."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.manifest import ModelSpec
from .base import BackendError, Features, as_features

# Execution providers tried in this order on a GPU device ('cuda', 'cuda:N', 'gpu').
_GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def default_threads() -> int:
    """Intra-op threads: 1 on machines with up to 2 cores (measured fastest there), else 2-4."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores // 2)


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
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads if threads is not None else default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        levels = {'none': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        opts.graph_optimization_level = levels[optimization]
        first, second = spec.graph_roles
        self._first = self._session(ort, opts, spec.path(first))
        self._second = self._session(ort, opts, spec.path(second))
        self._normalise = (tuple(spec.input_mean) != (0.0, 0.0, 0.0)
                           or tuple(spec.input_std) != (1.0, 1.0, 1.0))
        self._mean = np.asarray(spec.input_mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(spec.input_std, np.float32).reshape(1, 3, 1, 1)
        self._first_in = self._first.get_inputs()[0].name
        second_inputs = [i.name for i in self._second.get_inputs()]
        outputs = [o.name for o in self._second.get_outputs()]
        if len(outputs) != 2:
            raise BackendError(f'{spec.path(second)} has {len(outputs)} outputs; expected '
                               '(cls, reg)')
        self._outputs = outputs
        if spec.layout == 'backbone_head':
            # head(input1 = template features, input2 = search features)
            if len(second_inputs) != 2:
                raise BackendError(f'head graph {spec.path(second)} has inputs {second_inputs}; '
                                   'expected (template features, search features)')
            self._feature_names = second_inputs[:1]
            self._search_name = second_inputs[1]
        else:
            self._search_name = next((n for n in second_inputs if n == 'search'),
                                     second_inputs[0])
            self._feature_names = [n for n in second_inputs if n != self._search_name]

    def _session(self, ort, opts, path):
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
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
        search = self._prepare(search_crop)
        if self.spec.layout == 'backbone_head':
            search = self._first.run(None, {self._first_in: search})[0]
        feeds: Dict[str, np.ndarray] = dict(zip(self._feature_names, features))
        feeds[self._search_name] = search
        cls, reg = self._second.run(self._outputs, feeds)
        return cls, reg
