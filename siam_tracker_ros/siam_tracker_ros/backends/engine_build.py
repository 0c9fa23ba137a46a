"""TensorRT engines from the model's ONNX graphs: build (FP32/FP16/INT8) and a keyed cache.

An engine is only valid for the graph, the TensorRT version and the GPU it was built on, and
for the precision it was built with. The cache key is exactly those four things::

    key = sha256('onnx=<sha256 of the ONNX file>|trt=<version>|gpu=<name>|precision=<p>')

and the engine file is ``<cache>/<onnx stem>-<precision>-<key[:16]>.engine`` with a JSON
sidecar that records the key fields. When any of them changes the file name changes, the old
engines of that graph are removed and a new one is built. The key and cache logic are plain
functions (tested without a GPU); only ``build_engine_bytes``, ``runtime_info`` and the INT8
calibrator touch TensorRT.

The cache lives in ``$SIAM_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/siam_tracker_ros/engines``,
else ``~/.cache/siam_tracker_ros/engines`` (model directories may be read-only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.manifest import sha256_of
from .base import BackendError

LOG = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'int8')
ENGINE_SUFFIX = '.engine'

Shape = Tuple[int, ...]


class EngineBuildError(BackendError):
    """TensorRT could not parse or build a graph."""


# ----------------------------------------------------------------------------------------------
# cache key and cache (pure; no TensorRT)

@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on. Any change means a different engine file."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    precision: str

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision {self.precision!r} not in {PRECISIONS}')
        for name in ('onnx_sha256', 'trt_version', 'gpu_name'):
            if not str(getattr(self, name)).strip():
                raise ValueError(f'engine key field {name} is empty')

    @property
    def digest(self) -> str:
        """Hex sha256 over all four fields (GPU name stripped, whitespace collapsed)."""
        gpu = ' '.join(str(self.gpu_name).split())
        text = (f'onnx={self.onnx_sha256.lower()}|trt={self.trt_version.strip()}|gpu={gpu}'
                f'|precision={self.precision}')
        return hashlib.sha256(text.encode('utf-8')).hexdigest()

    def file_name(self, stem: str) -> str:
        """Engine file name for the graph ``stem`` (e.g. 'search')."""
        return f'{stem}-{self.precision}-{self.digest[:16]}{ENGINE_SUFFIX}'


def engine_key(onnx_path, trt_version: str, gpu_name: str, precision: str) -> EngineKey:
    """The cache key of ``onnx_path`` built with this TensorRT, GPU and precision."""
    return EngineKey(sha256_of(Path(onnx_path)), str(trt_version), str(gpu_name), precision)


def default_cache_dir() -> Path:
    """$SIAM_ENGINE_CACHE, else $XDG_CACHE_HOME/siam_tracker_ros/engines, else ~/.cache/..."""
    env = os.environ.get('SIAM_ENGINE_CACHE')
    if env:
        return Path(env).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base).expanduser() / 'siam_tracker_ros' / 'engines'


def _sidecar(engine: Path) -> Path:
    return engine.with_suffix('.json')


def read_sidecar(engine: Path) -> Optional[EngineKey]:
    """The key recorded beside an engine file (None when absent or unreadable)."""
    try:
        data = json.loads(_sidecar(engine).read_text())
        fields = ('onnx_sha256', 'trt_version', 'gpu_name', 'precision')
        return EngineKey(**{k: data[k] for k in fields})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lookup_engine(cache_dir, stem: str, key: EngineKey) -> Optional[Path]:
    """The cached engine for ``key``, or None (missing, or its sidecar names another key)."""
    path = Path(cache_dir) / key.file_name(stem)
    if path.is_file() and path.stat().st_size > 0 and read_sidecar(path) == key:
        return path
    return None


def stale_engines(cache_dir, stem: str, key: EngineKey) -> List[Path]:
    """Engines of graph ``stem`` at the same precision under another key (to be replaced).

    Another key means another ONNX (re-imported model), TensorRT version or GPU. Engines of
    the other precisions are kept, so switching between FP16 and INT8 does not rebuild.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    keep = key.file_name(stem)
    out = []
    for path in sorted(cache_dir.glob(f'{stem}-{key.precision}-*{ENGINE_SUFFIX}')):
        if path.name != keep:
            out.append(path)
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached_engine(onnx_path, key: EngineKey, build: Callable[[Path], bytes],
                  cache_dir=None, stem: Optional[str] = None,
                  force: bool = False) -> Tuple[Path, bool]:
    """Return (engine path, built_now): the cached engine for ``key`` or a fresh build.

    ``build(onnx_path) -> bytes`` makes the serialized engine (``build_engine_bytes`` on a GPU).
    ``stem`` names the graph in the cache (default: the ONNX file stem; the backend uses
    '<model name>-<role>'). Engines of that graph and precision built under another key
    (another ONNX, TensorRT version or GPU) are removed when the new one is written.
    """
    onnx_path = Path(onnx_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = stem or onnx_path.stem
    if not force:
        hit = lookup_engine(cache_dir, stem, key)
        if hit is not None:
            return hit, False
    data = build(onnx_path)
    if not data:
        raise EngineBuildError(f'building an engine from {onnx_path} produced no data')
    path = cache_dir / key.file_name(stem)
    _write_atomic(path, bytes(data))
    record = dict(asdict(key), onnx=str(onnx_path), digest=key.digest)
    _write_atomic(_sidecar(path), (json.dumps(record, indent=2) + '\n').encode())
    for old in stale_engines(cache_dir, stem, key):
        for p in (old, _sidecar(old)):
            if p.exists():
                p.unlink()
    return path, True


# ----------------------------------------------------------------------------------------------
# optimisation profiles (pure)

def profile_shapes(inputs: Sequence[Tuple[str, Shape]], exemplar_size: int,
                   instance_size: int) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shapes for the inputs of a graph that has dynamic dimensions.

    Exported split graphs are static and need none (empty result). The only dynamic graph
    this package makes is the NanoTrack backbone imported from upstream, whose image input has
    free height/width: it is profiled from the template (min) to the search crop (opt, max).
    Any other dynamic dimension is an error: re-export the graph with static shapes.
    """
    out: Dict[str, Tuple[Shape, Shape, Shape]] = {}
    for name, shape in inputs:
        shape = tuple(int(d) for d in shape)
        if all(d >= 0 for d in shape):
            continue
        if len(shape) == 4 and shape[0] in (1, -1) and shape[1] == 3 and \
                shape[2] < 0 and shape[3] < 0:
            small = (1, 3, int(exemplar_size), int(exemplar_size))
            large = (1, 3, int(instance_size), int(instance_size))
            out[name] = (small, large, large)
            continue
        raise EngineBuildError(
            f'input {name!r} has dynamic shape {shape}; TensorRT engines here are built from '
            'static graphs (only an image input with free height/width is supported). '
            'Re-export the model with static shapes (siam-model import ...)')
    return out


# ----------------------------------------------------------------------------------------------
# TensorRT (runs only where TensorRT and a GPU exist)

@dataclass(frozen=True)
class RuntimeInfo:
    """TensorRT version and GPU of this machine (the machine-dependent half of the key)."""

    trt_version: str
    gpu_name: str


def import_tensorrt():
    """``import tensorrt`` or raise BackendError saying how to get it."""
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for missing libnvinfer
        raise BackendError(
            f'TensorRT is not available here ({type(exc).__name__}: {exc}). TensorRT needs an '
            'NVIDIA GPU and its libraries: on a Jetson with JetPack 6 it comes with the '
            'system Python (python3-libnvinfer; make a venv with --system-site-packages); on a '
            'desktop GPU `pip install tensorrt`. Without a GPU use --backend onnxruntime.'
        ) from exc
    major = int(str(trt.__version__).split('.')[0])
    if major < 10:
        raise BackendError(f'TensorRT {trt.__version__} is too old: the tensorrt backend uses '
                           'the TensorRT 10 name-based API (JetPack 6 or newer)')
    return trt


def runtime_info() -> RuntimeInfo:
    """TensorRT version and the name + compute capability of CUDA device 0."""
    trt = import_tensorrt()
    from .tensorrt_backend import cuda_api
    return RuntimeInfo(str(trt.__version__), cuda_api().device_name())


def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine_bytes(onnx_path, precision: str = 'fp16', exemplar_size: int = 127,
                       instance_size: int = 255, calibrator=None,
                       workspace_mb: int = 1024) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine (TensorRT 10 API)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r} not in {PRECISIONS}')
    if precision == 'int8' and calibrator is None:
        raise EngineBuildError('INT8 needs a calibrator: pass --calib FRAMES_DIR')
    trt = import_tensorrt()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape))
              for i in range(network.num_inputs)]
    shapes = profile_shapes(inputs, exemplar_size, instance_size)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if precision in ('fp16', 'int8'):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == 'int8':
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if shapes:
            config.set_calibration_profile(profile)
    LOG.info('building %s engine from %s (this takes minutes on a Jetson)', precision,
             onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f'TensorRT failed to build an engine from {onnx_path} '
                               f'({precision}); see the TensorRT messages above')
    return bytes(serialized)


def make_calibrator(batches: Sequence[Mapping[str, np.ndarray]], cache_path=None):
    """An IInt8EntropyCalibrator2 that feeds ``batches`` (one dict of input name -> array each).

    The batches are real crops (and, for the search graph, the template features computed from
    them); see ``cli.model_tools.calibration_batches``. ``cache_path`` stores the calibration
    table so a rebuild does not recalibrate.
    """
    trt = import_tensorrt()
    from .tensorrt_backend import cuda_api
    if not batches:
        raise EngineBuildError('INT8 calibration needs at least one batch of crops')
    for batch in batches:
        for name, array in batch.items():
            if array.shape != batches[0][name].shape:
                raise EngineBuildError(f'calibration input {name!r} changes shape '
                                       f'({batches[0][name].shape} vs {array.shape})')
    cuda = cuda_api()

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = [{k: np.ascontiguousarray(v, np.float32) for k, v in b.items()}
                             for b in batches]
            self._index = 0
            self._device = {name: cuda.malloc(arr.nbytes)
                            for name, arr in self._batches[0].items()}
            self._cache = Path(cache_path) if cache_path else None

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self._index >= len(self._batches):
                return None
            batch = self._batches[self._index]
            self._index += 1
            for name in names:
                if name not in batch:
                    raise EngineBuildError(f'calibration batch has no input {name!r}')
                cuda.copy_to_device(self._device[name], batch[name])
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self):
            if self._cache is not None and self._cache.is_file():
                return self._cache.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if self._cache is not None:
                _write_atomic(self._cache, bytes(cache))

    return _EntropyCalibrator()


# ----------------------------------------------------------------------------------------------
# both graphs of a model

@dataclass(frozen=True)
class CachedEngine:
    """One engine of a model: its file, its key and whether this call built it."""

    role: str
    path: Path
    key: EngineKey
    built: bool


def ensure_engines(spec, precision: str = 'fp16', info: Optional[RuntimeInfo] = None,
                   cache_dir=None, allow_build: bool = True, force: bool = False,
                   calibration: Optional[Mapping[str, Sequence[Mapping[str, np.ndarray]]]] = None,
                   workspace_mb: int = 1024) -> Dict[str, CachedEngine]:
    """Engines for both graphs of model ``spec`` (role -> CachedEngine), from cache or built.

    ``calibration`` (INT8 only) maps each graph role to its calibration batches. INT8 engines
    are never built implicitly: without calibration data a missing INT8 engine is an error
    that says which command builds it.
    """
    if precision not in PRECISIONS:
        raise BackendError(f'precision {precision!r} not in {PRECISIONS}')
    info = info or runtime_info()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out: Dict[str, CachedEngine] = {}
    for role in spec.graph_roles:
        onnx_path = spec.path(role)
        key = engine_key(onnx_path, info.trt_version, info.gpu_name, precision)
        stem = re.sub(r'[^A-Za-z0-9._-]+', '_', f'{spec.name}-{role}')
        hit = None if force else lookup_engine(cache_dir, stem, key)
        if hit is not None:
            out[role] = CachedEngine(role, hit, key, False)
            continue
        if not allow_build:
            raise BackendError(f'no {precision} engine for {spec.name} {role} in {cache_dir}; '
                               f'build it with `siam-model build-engine {spec.root} '
                               f'--{precision}`')
        calibrator = None
        if precision == 'int8':
            if not calibration or role not in calibration:
                raise BackendError(
                    f'no int8 engine for {spec.name} {role} in {cache_dir}; INT8 needs '
                    f'calibration crops: `siam-model build-engine {spec.root} --int8 '
                    '--calib FRAMES_DIR`')
            calibrator = make_calibrator(
                calibration[role], cache_dir / f'{stem}-{key.onnx_sha256[:16]}.calib')

        def build(path, calibrator=calibrator):
            return build_engine_bytes(path, precision, spec.tracker.exemplar_size,
                                      spec.tracker.instance_size, calibrator, workspace_mb)

        path, built = cached_engine(onnx_path, key, build, cache_dir, stem=stem, force=force)
        out[role] = CachedEngine(role, path, key, built)
    return out
