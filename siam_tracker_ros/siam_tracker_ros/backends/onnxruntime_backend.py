"""
ONNX Runtime backend, tuned for small CPUs, using CUDA / TensorRT providers when present.

On a GPU device ('cuda', 'cuda:N', 'gpu', 'gpu:N') the TensorRT execution provider comes
first when the onnxruntime build has it (onnxruntime-gpu; on a Jetson the Jetson AI Lab
wheels), then CUDA, then the CPU for what neither takes. Both GPU providers get
``device_id=N``. The TensorRT provider keeps its engines in a cache beside the tensorrt
backend's (``<engine cache>/ort-trt/<model>-<key>-<precision>``, see ``ort_trt_cache_dir``), so
only the first start builds them (minutes on a Jetson). Which provider actually runs is what
``session.get_providers()`` reports: ``provider`` holds it, and it is logged.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .base import (as_features, BackendError, Features, fusion_feeds, neighbour_features,
                   no_fusion_error)
from .cuda import parse_device
from ..core.manifest import ModelSpec, sha256_of, temporal_inputs, TEMPORAL_OUTPUT

LOG = logging.getLogger(__name__)

# Input name of the search crop in the backbone+head graph built by search_graph().
SEARCH_INPUT = 'search'
TENSORRT_EP = 'TensorrtExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
CPU_EP = 'CPUExecutionProvider'
# Precisions of the TensorRT provider (trt_fp16_enable); the other providers run fp32.
PRECISIONS = ('fp32', 'fp16')
# Folder of the TensorRT provider's engines inside the engine cache (engine_build).
ORT_TRT_FOLDER = 'ort-trt'

Provider = Tuple[str, Dict[str, object]]


def default_threads() -> int:
    """
    Intra-op threads of the per-frame (search) session: every core, at most 4.

    Measured on a 2-core machine (NanoTrack v2, ORT 1.31, frames/s of update() on David, bag
    and uav_boat5, OpenCV TrackerNano in the same process): plain tracker 1 thread 345, 2
    threads 473-492; TrackerNano 275-323 on its default 2 threads. Two threads pay only when
    no other ORT thread pool spins beside them, which is why the template session is
    single-threaded (see OnnxRuntimeBackend).
    """
    cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def check_precision(precision: str) -> str:
    """Return ``precision`` when onnxruntime can run it, else raise BackendError saying why."""
    if precision == 'int8':
        raise BackendError('precision int8 needs a calibrated TensorRT engine: use the tensorrt '
                           'backend (siam-model build-engine --int8); onnxruntime runs fp32 or '
                           'fp16')
    if precision not in PRECISIONS:
        raise BackendError(f'unknown precision {precision!r}; onnxruntime runs {PRECISIONS}')
    return precision


def choose_providers(device: str, available: Sequence[str], precision: str = 'fp32',
                     trt_cache: Optional[Path] = None) -> List[Provider]:
    """
    Choose the execution providers and their options for ``device``, in priority order.

    'cpu' gives the CPU provider alone. A GPU device gives the TensorRT provider (when
    ``available``; fp16 when ``precision`` is 'fp16', its engine cache in ``trt_cache`` when
    given) and the CUDA provider, both with the device's ``device_id``, then the CPU one.
    """
    check_precision(precision)
    if device == 'cpu':
        return [(CPU_EP, {})]
    if not device.startswith(('cuda', 'gpu')):
        raise BackendError(f'unknown device {device!r}; use cpu or cuda[:N]')
    index = parse_device(device)
    providers: List[Provider] = []
    if TENSORRT_EP in available:
        trt: Dict[str, object] = {'device_id': index, 'trt_fp16_enable': precision == 'fp16'}
        if trt_cache is not None:
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache))
        providers.append((TENSORRT_EP, trt))
    if CUDA_EP in available:
        providers.append((CUDA_EP, {'device_id': index}))
    if not providers:
        raise BackendError(f'device {device!r} asked for, but this onnxruntime build has no GPU '
                           f'execution provider (available: {list(available)}); install '
                           'onnxruntime-gpu or use device cpu')
    return providers + [(CPU_EP, {})]


def provider_warnings(asked: str, running: str, device: str, precision: str) -> List[str]:
    """
    Return what to warn about once the sessions run on ``running`` after asking for ``asked``.

    A GPU provider that did not start (its CUDA / TensorRT libraries missing) and fp16 asked
    for on a GPU without the TensorRT provider (the others run fp32).
    """
    warnings = []
    if running != asked:
        warnings.append(f'onnxruntime could not start {asked} for device {device} and runs on '
                        f'{running}: check that the CUDA / TensorRT libraries of this '
                        'onnxruntime-gpu build are installed')
    if precision == 'fp16' and device != 'cpu' and running != TENSORRT_EP:
        warnings.append(f'precision fp16 applies to the TensorRT execution provider only; '
                        f'{running} runs fp32')
    return warnings


def ort_trt_cache_dir(spec: ModelSpec, precision: str, cache_dir=None) -> Path:
    """
    Return the engine folder of the TensorRT provider for ``spec`` at ``precision``.

    ``<cache_dir>/ort-trt/<model name>-<key>-<precision>``; ``cache_dir`` defaults to the
    tensorrt backend's engine cache ($SIAM_ENGINE_CACHE, else ~/.cache/siam_tracker_ros/engines).
    ONNX Runtime names its engines after the graph's file name and tensor names, not its
    weights, so the key (sha256 over the graph files' hashes) keeps a re-imported or
    fine-tuned model with the same graph from loading another model's engines.
    """
    from .engine_build import default_cache_dir
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    parts = []
    roles = spec.graph_roles + (('fusion',) if spec.has_fusion else ())
    for role in roles:
        digest = spec.sha256.get(role) or sha256_of(spec.path(role))
        parts.append(f'{role}={digest.lower()}')
    key = hashlib.sha256('|'.join(parts).encode('utf-8')).hexdigest()[:16]
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.name) or 'model'
    return root / ORT_TRT_FOLDER / f'{name}-{key}-{precision}'


def check_fusion_io(spec: ModelSpec, inputs: Sequence[Tuple[str, Sequence]],
                    outputs: Sequence[str]) -> None:
    """
    Raise BackendError unless a fusion graph has the I/O of ``nets.fusion_export``.

    Inputs ('zf_initial', (1, C, h, w)) and ('zf_memory', (1, N, C, h, w)) with N the
    manifest's memory size, one output.
    """
    path = spec.path('fusion')
    names = [n for n, _ in inputs]
    if names != ['zf_initial', 'zf_memory'] or len(outputs) != 1:
        raise BackendError(f'{path} has inputs {names} and outputs {list(outputs)}; a fusion '
                           "graph takes ('zf_initial', 'zf_memory') and gives one output: "
                           're-export the model (siam-model export ... --modules)')
    shape = list(inputs[1][1])
    if len(shape) != 5 or shape[1] != spec.fusion_memory:
        raise BackendError(f'{path}: zf_memory has shape {shape}, the manifest says '
                           f'{spec.fusion_memory} memory slots; re-export the model')


def search_graph(backbone_path, head_path) -> bytes:
    """
    Backbone and head joined into one graph: (template features, search crop) -> (cls, reg).

    The head's inputs are (template features, search features); the backbone's output feeds
    the second. Errors name the files, so a corrupt model is reported where it entered.
    """
    import onnx
    from onnx import compose

    def read(role, path):
        try:
            return onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf decode errors come in several types
            raise BackendError(f'cannot read the {role} graph {path}: {exc}; the file may be '
                               'corrupt: re-import or re-fetch the model') from exc
    backbone = read('backbone', backbone_path)
    head = read('head', head_path)
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
                 optimization: str = 'all', precision: str = 'fp32', cache_dir=None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError('onnxruntime is not installed: pip install onnxruntime') from exc
        self.spec = spec
        self.device = device
        self.precision = check_precision(precision)
        available = ort.get_available_providers()
        trt_cache = None
        if device != 'cpu' and TENSORRT_EP in available:
            trt_cache = ort_trt_cache_dir(spec, precision, cache_dir)
        self.providers = choose_providers(device, available, precision, trt_cache)
        if trt_cache is not None:
            try:
                trt_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f'cannot create the TensorRT provider engine cache '
                                   f'{trt_cache}: {exc}; set SIAM_ENGINE_CACHE to a writable '
                                   'folder') from exc
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
        self.temporal = spec.temporal_frames
        self._previous_names = list(temporal_inputs(self.temporal))
        second_inputs = [i.name for i in self._second.get_inputs()]
        stray = sorted(set(second_inputs) & set(temporal_inputs(2)))
        if stray and not self.temporal:
            raise BackendError(f'{spec.path(second)} takes previous-frame features {stray} '
                               f'but the manifest of {spec.name} has no temporal_frames; '
                               're-export the model (siam-model export --modules)')
        if self.temporal:
            self._previous_zeros = self._temporal_io(outputs)
            outputs = [n for n in outputs if n != TEMPORAL_OUTPUT]
        if len(outputs) != 2:
            raise BackendError(f'{spec.path(second)} has {len(outputs)} outputs; expected '
                               '(cls, reg)')
        self._outputs = outputs
        self._search_name = next((n for n in second_inputs if n in ('search', SEARCH_INPUT)),
                                 second_inputs[0])
        self._feature_names = [n for n in second_inputs if n != self._search_name
                               and n not in self._previous_names]
        # The fusion graph runs on template updates only: one thread, like the template.
        self._fusion = (self._session(ort, options(1), spec.path('fusion'))
                        if spec.has_fusion else None)
        if self._fusion is not None:
            check_fusion_io(spec, [(i.name, i.shape) for i in self._fusion.get_inputs()],
                            [o.name for o in self._fusion.get_outputs()])
        self.active_providers: List[str] = list(self._second.get_providers())
        self.provider = self.active_providers[0]
        self._report_providers()

    def _temporal_io(self, outputs: Sequence[str]) -> List[np.ndarray]:
        """Check a temporal search graph's extra inputs and output; zeros of their shapes."""
        path = self.spec.path(self.spec.graph_roles[1])
        inputs = {i.name: i.shape for i in self._second.get_inputs()}
        missing = [n for n in self._previous_names if n not in inputs]
        if missing or TEMPORAL_OUTPUT not in outputs:
            raise BackendError(f'{path} lacks the temporal inputs {missing} or the output '
                               f'{TEMPORAL_OUTPUT!r} its manifest (temporal_frames '
                               f'{self.temporal}) promises; re-export the model')
        zeros = []
        for name in self._previous_names:
            shape = inputs[name]
            if not all(isinstance(d, int) and d > 0 for d in shape):
                raise BackendError(f'{path}: input {name} must have a static shape, got '
                                   f'{shape}')
            zeros.append(np.zeros(shape, np.float32))
        return zeros

    def _report_providers(self) -> None:
        LOG.info('onnxruntime runs %s on %s (registered: %s)', self.spec.name, self.provider,
                 ', '.join(self.active_providers))
        for warning in provider_warnings(self.providers[0][0], self.provider, self.device,
                                         self.precision):
            LOG.warning('%s', warning)

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

    @property
    def has_fusion(self) -> bool:
        """Whether the model has a template-fusion graph."""
        return self._fusion is not None

    def fuse_templates(self, initial: Features, memory: Sequence[Features]) -> Features:
        """Fuse the initial template features with N samples (oldest first)."""
        if self._fusion is None:
            raise no_fusion_error(self.spec.name)
        zf, mem = fusion_feeds(initial, memory, self.spec.fusion_memory)
        return as_features(self._fusion.run(None, {'zf_initial': zf, 'zf_memory': mem}))

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop -> (cls, reg); a temporal model's run with no earlier frame."""
        if self.temporal:
            return self.track_temporal(features, search_crop, ())[:2]
        feeds: Dict[str, np.ndarray] = dict(zip(self._feature_names, features))
        feeds[self._search_name] = self._prepare(search_crop)
        cls, reg = self._second.run(self._outputs, feeds)
        return cls, reg

    def track_temporal(self, features: Sequence[np.ndarray], search_crop: np.ndarray,
                       previous: Sequence[np.ndarray]
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features + search crop + earlier frames' xf (oldest first) -> (cls, reg, xf)."""
        if not self.temporal:
            raise BackendError(f'model {self.spec.name} has no temporal search graph; use '
                               'track()')
        feeds: Dict[str, np.ndarray] = dict(zip(self._feature_names, features))
        feeds[self._search_name] = self._prepare(search_crop)
        neighbours = neighbour_features(previous, self.temporal)
        if neighbours is None:  # frame t stands in for its neighbours: its features first
            feeds.update(zip(self._previous_names, self._previous_zeros))
            xf, = self._second.run([TEMPORAL_OUTPUT], feeds)
            neighbours = (xf,) * self.temporal
        feeds.update(zip(self._previous_names, neighbours))
        cls, reg, xf = self._second.run(self._outputs + [TEMPORAL_OUTPUT], feeds)
        return cls, reg, xf
