"""
PyTorch backend: runs the network definitions in ``nets`` from a checkpoint.

Slower than ONNX Runtime or TensorRT on the same device; it exists for parity checks against
the exported graphs, for nets without an exported graph yet, and for CUDA without TensorRT.
The model spec must name the architecture (``arch``, a key of ``nets.registry.NETS``) and hold
a ``checkpoint`` file. A model with learned modules (a template fusion, modules inside the
template / search graphs, a temporal search graph) runs them as the PyTorch modules rebuilt
from the directory's ``modules.pth`` (``nets.fusion_export``, ``nets.module_export``); the
torch backend needs no ONNX graph, so a spec naming just ``checkpoint`` and ``modules`` (with
``fusion_memory`` / ``temporal_frames`` set) runs the same model (siam-train's validation).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .base import BackendError, Features, fusion_feeds, neighbour_features, no_fusion_error
from ..core.manifest import ModelError, ModelSpec, MODULES_ROLE

LOG = logging.getLogger(__name__)


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendError('the torch backend needs PyTorch (pip install torch); '
                           'use backend onnxruntime otherwise') from exc
    return torch


class TorchBackend:
    """Backend on PyTorch (CPU or CUDA, optional fp16 on CUDA)."""

    name = 'torch'

    def __init__(self, spec: ModelSpec, device: str = 'cpu', fp16: bool = False,
                 warmup: bool = True, cuda_graph: bool = True):
        """
        Load the checkpoint of ``spec`` onto ``device``.

        ``warmup`` runs one template and one search pass on blank crops of the model's crop
        sizes, so the first real SetTarget does not pay PyTorch's lazy initialisation
        (seconds on a CPU, kernel selection on CUDA).

        ``cuda_graph`` (CUDA only): each pass (template, search, temporal search) is captured
        once per input shape as a CUDA graph and replayed. Eager PyTorch launches one kernel
        per layer from Python, which for a network this small costs more than the arithmetic.
        A capture that fails leaves the backend on eager calls (logged once).
        """
        torch = _import_torch()
        self._torch = torch
        self.spec = spec
        dev = str(device).strip().lower()
        if dev == 'gpu':
            dev = 'cuda'
        if not (dev == 'cpu' or dev == 'cuda' or dev.startswith('cuda:')):
            raise BackendError(f'torch backend: device {device!r} is not supported; use '
                               "'cpu', 'cuda' or 'cuda:N'")
        if dev.startswith('cuda') and not torch.cuda.is_available():
            raise BackendError(f'torch backend: device {device!r} asked for, but this torch '
                               f'({torch.__version__}) sees no CUDA device; use '
                               "device='cpu'")
        if fp16 and not dev.startswith('cuda'):
            raise BackendError('torch backend: fp16 is only supported on CUDA; use fp16=False '
                               'on the CPU')
        self.device = dev
        self.fp16 = bool(fp16)
        # cuDNN runs float32 convolutions as TF32 on Ampere and later GPUs (Orin included)
        # unless told not to: about 1e-3 relative error instead of 1e-6. fp32 means fp32 here;
        # fp16 is the fast mode.
        self._no_tf32 = dev.startswith('cuda') and not fp16
        self._use_graphs = bool(cuda_graph) and dev.startswith('cuda')
        self._graphs: Dict[tuple, tuple] = {}
        self._dtype = torch.float16 if fp16 else torch.float32

        from ..nets.registry import NETS, build_net, load_weights
        if not spec.arch:
            raise BackendError(f'model {spec.name} ({spec.root}) names no network '
                               "architecture ('arch' in its manifest); the torch backend "
                               'needs one of ' + ', '.join(sorted(NETS)))
        if spec.arch not in NETS:
            raise BackendError(f'model {spec.name}: architecture {spec.arch!r} has no PyTorch '
                               f'definition here; known: {sorted(NETS)}')
        self.temporal = spec.temporal_frames
        try:
            net = load_weights(build_net(spec.arch), spec.path('checkpoint'), strict=True)
        except ModelError as exc:
            raise BackendError(f'torch backend cannot load model {spec.name}: {exc}') from exc
        net = net.to(device=self.device, dtype=self._dtype).eval()
        self._net = net
        self._template, self._search = net.split()
        self._temporal_search = None
        self._fusion = None
        if self.temporal or spec.has_fusion or MODULES_ROLE in spec.files:
            self._load_learned(spec, net)

        mean = np.asarray(spec.input_mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(spec.input_std, dtype=np.float32).reshape(1, 3, 1, 1)
        if np.any(std == 0):
            raise BackendError(f'model {spec.name}: input std {spec.input_std} contains 0')
        self._normalise = bool(np.any(mean != 0) or np.any(std != 1))
        self._mean = torch.from_numpy(mean).to(self.device)
        self._std = torch.from_numpy(std).to(self.device)
        if warmup:
            self.warm_up()

    def _load_learned(self, spec: ModelSpec, net) -> None:
        """Rebuild the model's template fusion and graph modules from modules.pth."""
        from ..nets.fusion_export import fusion_module
        from ..nets.module_export import module_net, ModuleSearch, ModuleTemplate
        from ..nets.modules_file import check_exportable, read_modules
        parts = (('template fusion', spec.has_fusion), ('temporal search', self.temporal))
        what = ' and '.join(name for name, on in parts if on) or 'learned modules'
        try:
            path = spec.path(MODULES_ROLE)
            learned = read_modules(path, spec.arch)
            check_exportable(learned, path)
            want = tuple(name for name, on in (('st_fusion', spec.has_fusion),
                                               ('tafa', self.temporal)) if on)
            has = tuple(name for name in learned.runtime if name in ('st_fusion', 'tafa'))
            if has != want:
                raise ModelError(f'{path} holds the modules {list(learned.runtime)}, the model '
                                 f'runs {list(want)}; re-export it (siam-model export '
                                 '--modules)')
            if spec.has_fusion:
                self._fusion = fusion_module(learned, path).to(device=self.device,
                                                               dtype=self._dtype)
            if learned.graph:
                learned_net = module_net(net, learned, path).to(device=self.device,
                                                                dtype=self._dtype).eval()
                if learned_net.layer_aggregation is not None:
                    self._template = ModuleTemplate(learned_net)
                search = ModuleSearch(learned_net)
                if self.temporal:
                    self._temporal_search = search
                else:
                    self._search = search
        except ModelError as exc:
            raise BackendError(f'torch backend cannot load the {what} of model {spec.name}: '
                               f'{exc}') from exc

    @property
    def has_fusion(self) -> bool:
        """Whether the model has a template-fusion module."""
        return self._fusion is not None

    def fuse_templates(self, initial: Features, memory: Sequence[Features]) -> Features:
        """Fuse the initial template features with N samples (oldest first)."""
        if self._fusion is None:
            raise no_fusion_error(self.spec.name)
        zf, mem = fusion_feeds(initial, memory, self.spec.fusion_memory)
        try:
            with self._inference():
                out = self._fusion(self._tensor(zf), self._tensor(mem))
        except ValueError as exc:
            raise BackendError(f'model {self.spec.name}: {exc}') from exc
        return (self._numpy(out),)

    def _inference(self) -> contextlib.ExitStack:
        """Inference mode, with cuDNN's TF32 off for the call when running fp32 on CUDA."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._torch.inference_mode())
        if self._no_tf32:
            cudnn = self._torch.backends.cudnn
            stack.enter_context(cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                                            deterministic=cudnn.deterministic,
                                            allow_tf32=False))
        return stack

    def warm_up(self) -> None:
        """Run one template + search pass on blank crops of the spec's exemplar/instance sizes."""
        z, x = self.spec.tracker.step.exemplar_size, self.spec.tracker.step.instance_size
        features = self.encode_template(np.zeros((1, 3, z, z), np.float32))
        self.track(features, np.zeros((1, 3, x, x), np.float32))

    def _input(self, crop: np.ndarray, what: str):
        arr = np.asarray(crop)
        if arr.ndim != 4 or arr.shape[:2] != (1, 3) or arr.shape[2] != arr.shape[3]:
            raise BackendError(f'torch backend: {what} crop must be (1, 3, S, S) float32, '
                               f'got shape {arr.shape}')
        t = self._torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)
        if self._normalise:
            t = (t - self._mean) / self._std
        return t.to(self._dtype)

    def _tensor(self, array: np.ndarray):
        arr = np.ascontiguousarray(array, dtype=np.float32)
        return self._torch.from_numpy(arr).to(device=self.device, dtype=self._dtype)

    @staticmethod
    def _numpy(t) -> np.ndarray:
        # Always a copy: callers never share memory with torch tensors.
        return np.array(t.float().cpu().numpy(), dtype=np.float32, copy=True)

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop (1, 3, Z, Z) raw pixels -> template features (float32 copies)."""
        z = self._input(crop, 'template')
        with self._inference():
            out = self._run('template', self._template, z)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(self._numpy(t) for t in outs)

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """
        Features + search crop (1, 3, X, X) -> (cls, reg) float32 copies.

        A temporal model's run with no earlier frame (see ``track_temporal``).
        """
        if self.temporal:
            return self.track_temporal(features, search_crop, ())[:2]
        if isinstance(features, np.ndarray):
            features = (features,)
        x = self._input(search_crop, 'search')
        zf = [self._tensor(f) for f in features]
        with self._inference():
            cls, reg = self._run('search', self._search, x, *zf)
        return self._numpy(cls), self._numpy(reg)

    def _run(self, name: str, module, *inputs):
        """Run one pass: replayed as a CUDA graph where graphs are on, else eager."""
        out = self._replay(name, module, *inputs) if self._use_graphs else None
        return out if out is not None else module(*inputs)

    def _replay(self, name: str, module, *inputs) -> Optional[tuple]:
        """Run a pass as a CUDA graph (captured on first use per shape); None: run it eager."""
        torch = self._torch
        key = (name,) + tuple(tuple(t.shape) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                static = [t.clone() for t in inputs]
                side = torch.cuda.Stream(device=self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):  # warm-up runs off the capture, as documented
                    for _ in range(2):
                        module(*static)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = module(*static)
            except Exception as exc:  # noqa: BLE001 - capture errors come in several types
                LOG.warning('torch backend: CUDA graph capture of the %s pass failed (%s); '
                            'running eager', name, exc)
                self._use_graphs = False
                return None
            entry = self._graphs[key] = (graph, static, outputs)
        graph, static, outputs = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        graph.replay()
        return outputs

    def track_temporal(self, features: Sequence[np.ndarray], search_crop: np.ndarray,
                       previous: Sequence[np.ndarray]
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features + search crop + earlier frames' xf (oldest first) -> (cls, reg, xf) copies."""
        if self._temporal_search is None:
            raise BackendError(f'model {self.spec.name} has no temporal search graph; use '
                               'track()')
        if isinstance(features, np.ndarray):
            features = (features,)
        x = self._input(search_crop, 'search')
        zf = [self._tensor(f) for f in features]
        neighbours = neighbour_features(previous, self.temporal)
        prev = [] if neighbours is None else [self._tensor(f) for f in neighbours]
        with self._inference():
            cls, reg, xf = self._run('temporal', self._temporal_search, x, *zf, *prev)
        return self._numpy(cls), self._numpy(reg), self._numpy(xf)
