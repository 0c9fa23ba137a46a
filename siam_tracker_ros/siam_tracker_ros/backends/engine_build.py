"""
TensorRT engines from the model's ONNX graphs: build (FP32/FP16/INT8) and a keyed cache.

An engine is only valid for the graph, the TensorRT version and the GPU it was built on, and
for the precision it was built with. The cache key is exactly those four things::

    key = sha256('onnx=<sha256 of the ONNX file>|trt=<version>|gpu=<name>|precision=<p>')

and the engine file is ``<cache>/<onnx stem>-<precision>-<key[:16]>.engine`` with a JSON
sidecar that records the key fields, the engine's size and sha256 and the graph's input and
output names in ONNX order (TensorRT documents no order of an engine's I/O tensors, so the
backend binds them by these names). When any key field changes the file name changes, the old
engines of that graph are removed and a new one is built. An engine whose bytes do not match
its sidecar (a power cut during a write) is a cache miss and is rebuilt. Files are written to
a temporary file, flushed, fsync'ed and renamed, with the mode the umask gives (other users,
e.g. a systemd service, can read the cache).

INT8 engines are calibrated on crops of real frames (``Calibration``). The calibration table
is cached beside the engines, keyed by the ONNX hash, the frames (their file list and the crop
count) and the TensorRT version; a forced build recalibrates.

The cache lives in ``$SIAM_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/siam_tracker_ros/engines``,
else ``~/.cache/siam_tracker_ros/engines`` (model directories may be read-only). Upstream
graphs that TensorRT cannot build (Conv nodes with run-time weights) are replaced by the split
export of the model's checkpoint, kept in ``<cache>/models/`` (``tensorrt_model``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
import re
import shutil
import tempfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .base import BackendError
from .cuda import cuda_api, CudaUnavailable
from ..core.manifest import load_manifest, MANIFEST_NAME, ModelSpec, sha256_of

LOG = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'fp16', 'int8')
ENGINE_SUFFIX = '.engine'
CALIB_SUFFIX = '.calib'

Shape = Tuple[int, ...]
Batches = Mapping[str, Sequence[Mapping[str, np.ndarray]]]


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


@dataclass(frozen=True)
class EngineIO:
    """Input and output tensor names of a graph, in ONNX order."""

    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]


@dataclass(frozen=True)
class BuiltEngine:
    """A serialized engine and the I/O names of the graph it was built from."""

    data: bytes
    io: EngineIO


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar of an engine file: its key, size, sha256 and I/O names."""

    key: EngineKey
    size: int
    sha256: str
    io: EngineIO


def engine_key(onnx_path, trt_version: str, gpu_name: str, precision: str) -> EngineKey:
    """Return the cache key of ``onnx_path`` built with this TensorRT, GPU and precision."""
    return EngineKey(sha256_of(Path(onnx_path)), str(trt_version), str(gpu_name), precision)


def default_cache_dir() -> Path:
    """Return $SIAM_ENGINE_CACHE, else $XDG_CACHE_HOME/siam_tracker_ros/engines, else ~/.cache."""
    env = os.environ.get('SIAM_ENGINE_CACHE')
    if env:
        return Path(env).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base).expanduser() / 'siam_tracker_ros' / 'engines'


def _sidecar(engine: Path) -> Path:
    return engine.with_suffix('.json')


def read_sidecar(engine: Path) -> Optional[EngineRecord]:
    """Read the record beside an engine file (None when absent, unreadable or incomplete)."""
    try:
        data = json.loads(_sidecar(engine).read_text())
        fields = ('onnx_sha256', 'trt_version', 'gpu_name', 'precision')
        key = EngineKey(**{k: data[k] for k in fields})
        io = EngineIO(tuple(str(n) for n in data['inputs']),
                      tuple(str(n) for n in data['outputs']))
        return EngineRecord(key, int(data['engine_bytes']), str(data['engine_sha256']), io)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lookup_engine(cache_dir, stem: str, key: EngineKey) -> Optional[Path]:
    """
    Return the cached engine for ``key``, or None.

    None when the file is missing, its sidecar names another key or lacks the I/O names, or
    its bytes are not those the sidecar records (a truncated or corrupt file).
    """
    path = Path(cache_dir) / key.file_name(stem)
    record = read_sidecar(path)
    if record is None or record.key != key or not path.is_file():
        return None
    if path.stat().st_size != record.size or sha256_of(path) != record.sha256:
        LOG.warning('engine %s does not match its record (truncated or corrupt): rebuilding',
                    path)
        return None
    return path


def stale_engines(cache_dir, stem: str, key: EngineKey) -> List[Path]:
    """
    List engines of graph ``stem`` at the same precision under another key (to replace).

    Another key means another ONNX (re-imported model), TensorRT version or GPU. Engines of
    the other precisions are kept, so switching between FP16 and INT8 does not rebuild.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    keep = key.file_name(stem)
    return [p for p in sorted(cache_dir.glob(f'{stem}-{key.precision}-*{ENGINE_SUFFIX}'))
            if p.name != keep]


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, not thread-safe)
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: temp file, fsync, rename; mode from the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def cached_engine(onnx_path, key: EngineKey, build: Callable[[Path], BuiltEngine],
                  cache_dir=None, stem: Optional[str] = None,
                  force: bool = False) -> Tuple[Path, EngineRecord, bool]:
    """
    Return (engine path, its record, built_now): the cached engine for ``key`` or a build.

    ``build(onnx_path) -> BuiltEngine`` makes the serialized engine (``build_engine`` on a
    GPU). ``stem`` names the graph in the cache (default: the ONNX file stem; the backend uses
    '<model name>-<role>'). Engines of that graph and precision built under another key
    (another ONNX, TensorRT version or GPU) are removed when the new one is written.
    """
    onnx_path = Path(onnx_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = stem or onnx_path.stem
    if not force:
        hit = lookup_engine(cache_dir, stem, key)
        if hit is not None:
            return hit, read_sidecar(hit), False
    built = build(onnx_path)
    data = bytes(built.data)
    if not data:
        raise EngineBuildError(f'building an engine from {onnx_path} produced no data')
    path = cache_dir / key.file_name(stem)
    record = EngineRecord(key, len(data), hashlib.sha256(data).hexdigest(), built.io)
    _write_atomic(path, data)
    sidecar = dict(asdict(key), onnx=str(onnx_path), digest=key.digest,
                   engine_bytes=record.size, engine_sha256=record.sha256,
                   inputs=list(built.io.inputs), outputs=list(built.io.outputs))
    _write_atomic(_sidecar(path), (json.dumps(sidecar, indent=2) + '\n').encode())
    for old in stale_engines(cache_dir, stem, key):
        for p in (old, _sidecar(old)):
            if p.exists():
                p.unlink()
    return path, record, True


# ----------------------------------------------------------------------------------------------
# optimisation profiles and inputs (pure)

def profile_shapes(inputs: Sequence[Tuple[str, Shape]], exemplar_size: int,
                   instance_size: int) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """
    Return (min, opt, max) shapes for the inputs of a graph that has dynamic dimensions.

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


def prepare_input(spec: ModelSpec, crop: np.ndarray) -> np.ndarray:
    """
    Return a crop as the graphs take it: float32, contiguous, (crop - mean) / std.

    The manifest's per-channel mean and std; the TensorRT backend and the INT8 calibration
    crops both go through here.
    """
    crop = np.asarray(crop, dtype=np.float32)
    if tuple(spec.input_mean) != (0.0, 0.0, 0.0) or tuple(spec.input_std) != (1.0, 1.0, 1.0):
        mean = np.asarray(spec.input_mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(spec.input_std, np.float32).reshape(1, 3, 1, 1)
        crop = (crop - mean) / std
    return np.ascontiguousarray(crop, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# TensorRT (runs only where TensorRT and a GPU exist)

@dataclass(frozen=True)
class RuntimeInfo:
    """TensorRT version and GPU of this machine (the machine-dependent half of the key)."""

    trt_version: str
    gpu_name: str


def import_tensorrt():
    """Import tensorrt (10 or newer) or raise CudaUnavailable saying how to get it."""
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for missing libnvinfer
        raise CudaUnavailable(
            f'TensorRT is not available here ({type(exc).__name__}: {exc}). TensorRT needs an '
            'NVIDIA GPU and its libraries: on a Jetson with JetPack 6 it comes with the '
            'system Python (python3-libnvinfer; make a venv with --system-site-packages); on a '
            'desktop GPU `pip install tensorrt`. Without a GPU use --backend onnxruntime.'
        ) from exc
    major = str(trt.__version__).split('.')[0]
    if not major.isdigit() or int(major) < 10:
        raise CudaUnavailable(f'TensorRT {trt.__version__} is too old: the tensorrt backend '
                              'uses the TensorRT 10 name-based API (JetPack 6 or newer)')
    return trt


@functools.lru_cache(maxsize=None)
def trt_logger(trt):
    """
    Return the one ``trt.Logger`` of this process (per tensorrt module).

    TensorRT keeps the first logger it is given and warns when a later builder or runtime
    brings another one.
    """
    return trt.Logger(trt.Logger.WARNING)


def runtime_info(device: int = 0) -> RuntimeInfo:
    """Return the TensorRT version and the name + compute capability of CUDA ``device``."""
    trt = import_tensorrt()
    return RuntimeInfo(str(trt.__version__), cuda_api(device).device_name())


def build_engine(onnx_path, precision: str = 'fp16', exemplar_size: int = 127,
                 instance_size: int = 255, calibrator=None,
                 workspace_mb: int = 1024) -> BuiltEngine:
    """
    Parse ``onnx_path`` and build a serialized engine (TensorRT 10 API).

    FP32 clears TF32 (on by default on Ampere and Orin), so FP32 engines compute in FP32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r} not in {PRECISIONS}')
    if precision == 'int8' and calibrator is None:
        raise EngineBuildError('INT8 needs a calibrator: pass --calib FRAMES_DIR')
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f'TensorRT cannot parse {onnx_path}: {errors}')
    io = EngineIO(tuple(network.get_input(i).name for i in range(network.num_inputs)),
                  tuple(network.get_output(i).name for i in range(network.num_outputs)))
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
    if precision == 'fp32':
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ('fp16', 'int8'):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == 'int8':
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if shapes and not config.set_calibration_profile(profile):
            raise EngineBuildError(f'TensorRT refused the calibration profile of {onnx_path}')
    LOG.info('building %s engine from %s (this takes minutes on a Jetson)', precision,
             onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f'TensorRT failed to build an engine from {onnx_path} '
                               f'({precision}); see the TensorRT messages above')
    return BuiltEngine(bytes(serialized), io)


# ----------------------------------------------------------------------------------------------
# INT8 calibration

@dataclass(frozen=True)
class Calibration:
    """
    Calibration crops for an INT8 build.

    ``digest`` identifies the frames (file list and crop count; see
    ``cli.model_tools.calibration_digest``); ``load()`` returns, per graph role, the batches
    (one dict of input name -> array each). It is called only when an engine is built.
    """

    digest: str
    load: Callable[[], Batches]


def calibration_table(cache_dir, stem: str, key: EngineKey, frames_digest: str) -> Path:
    """Return where the calibration table of ``stem`` calibrated on these frames is kept."""
    text = f'onnx={key.onnx_sha256}|frames={frames_digest}|trt={key.trt_version.strip()}'
    digest = hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]
    return Path(cache_dir) / f'{stem}-int8-{digest}{CALIB_SUFFIX}'


def make_calibrator(batches: Sequence[Mapping[str, np.ndarray]], cuda, cache_path=None,
                    read_cache: bool = True):
    """
    Make an IInt8EntropyCalibrator2 that feeds ``batches`` (dicts of input name -> array).

    The batches are real crops (and, for the search graph, the template features computed from
    them); see ``cli.model_tools.calibration_batches``. ``cache_path`` stores the calibration
    table; with ``read_cache`` False an existing table is ignored (and replaced). ``close()``
    frees the device buffers; ``calibrated`` says whether TensorRT asked for crops.
    """
    trt = import_tensorrt()
    if not batches:
        raise EngineBuildError('INT8 calibration needs at least one batch of crops')
    for batch in batches:
        for name, array in batch.items():
            if array.shape != batches[0][name].shape:
                raise EngineBuildError(f'calibration input {name!r} changes shape '
                                       f'({batches[0][name].shape} vs {array.shape})')

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = [{k: np.ascontiguousarray(v, np.float32) for k, v in b.items()}
                             for b in batches]
            self._index = 0
            self._cache = Path(cache_path) if cache_path else None
            self._read_cache = read_cache
            self.calibrated = False
            with cuda.active():
                self._device = {name: cuda.malloc(arr.nbytes)
                                for name, arr in self._batches[0].items()}

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            # Called by TensorRT: report problems in the log and end calibration (an
            # exception cannot cross back into the builder).
            if self._index >= len(self._batches):
                return None
            batch = self._batches[self._index]
            missing = [n for n in names if n not in batch]
            if missing:
                LOG.error('calibration batches have no input %s (they have %s)', missing,
                          sorted(batch))
                return None
            self._index += 1
            self.calibrated = True
            with cuda.active():
                for name in names:
                    cuda.copy_to_device(self._device[name], batch[name])
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self):
            if self._read_cache and self._cache is not None and self._cache.is_file():
                return self._cache.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if self._cache is not None:
                _write_atomic(self._cache, bytes(cache))

        def close(self):
            with cuda.active():
                for ptr in self._device.values():
                    cuda.free(ptr)
            self._device = {}

    return _EntropyCalibrator()


# ----------------------------------------------------------------------------------------------
# graphs TensorRT can build

def _runtime_weight_convs(onnx_path: Path) -> List[str]:
    from ..nets.onnx_inspect import runtime_weight_convs
    return runtime_weight_convs(onnx_path)


def tensorrt_model(spec: ModelSpec, cache_dir=None, allow_export: bool = True) -> ModelSpec:
    """
    Return ``spec`` when TensorRT can build its graphs, else the split export of its checkpoint.

    Upstream NanoTrack v3 computes its correlations with Conv nodes whose weights come from
    the template (run-time weights), which TensorRT does not build. For such a model with a
    NanoTrack checkpoint the split export (constant-weight correlations, same outputs) is
    written once to ``<cache>/models/`` and used instead; otherwise EngineBuildError says
    what to run.
    """
    bad = {}
    for role in spec.graph_roles:
        names = _runtime_weight_convs(spec.path(role))
        if names:
            bad[role] = names
    if not bad:
        return spec
    found = '; '.join(f'{role}: {", ".join(names)}' for role, names in bad.items())
    problem = (f'model {spec.name} ({spec.root}) has Conv nodes with run-time weights '
               f'({found}), which TensorRT cannot build')
    match = re.fullmatch(r'nanotrack_v([123])', spec.arch or '')
    if match is None or 'checkpoint' not in spec.files:
        raise EngineBuildError(f'{problem}; export the model with constant-weight correlations '
                               '(`siam-model export` for a NanoTrack checkpoint, `siam-model '
                               'import pysot` for SiamRPN++) and build from that folder')
    version = int(match.group(1))
    checkpoint = spec.path('checkpoint')
    command = (f'siam-model export nanotrack-v{version} --checkpoint {checkpoint} --out DIR, '
               'then use DIR')
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / 'models' / f'{spec.name}-{sha256_of(checkpoint)[:16]}'
    if (target / MANIFEST_NAME).is_file():
        return load_manifest(target)
    if not allow_export:
        raise EngineBuildError(f'{problem}; run `{command}`')
    try:
        from ..nets.export import export_nanotrack
    except ImportError as exc:
        raise EngineBuildError(f'{problem}; exporting TensorRT-safe graphs from {checkpoint} '
                               f'needs PyTorch ({exc}): run `{command}` on a machine with '
                               'PyTorch') from exc
    LOG.warning('%s: exporting the TensorRT-safe split graphs from %s into %s', problem,
                checkpoint, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=str(target.parent), prefix=f'{target.name}.tmp'))
    try:
        export_nanotrack(version, checkpoint, tmp, name=f'{spec.name}-split')
        os.replace(tmp, target)
    except OSError:
        if not (target / MANIFEST_NAME).is_file():  # not another process that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_manifest(target)


# ----------------------------------------------------------------------------------------------
# both graphs of a model

@dataclass(frozen=True)
class CachedEngine:
    """
    One engine of a model: its file, key, I/O names and whether this call built it.

    ``calibration`` says, for an INT8 engine built now, where its calibration came from.
    """

    role: str
    path: Path
    key: EngineKey
    built: bool
    io: EngineIO
    calibration: str = ''


def engine_roles(spec: ModelSpec) -> Tuple[str, ...]:
    """Return the graphs of ``spec`` that get an engine: its two, then 'fusion' if it has one."""
    return tuple(spec.graph_roles) + (('fusion',) if spec.has_fusion else ())


def role_precision(role: str, precision: str) -> str:
    """
    Return the precision the engine of ``role`` is built with for a model at ``precision``.

    The template-fusion graph (attention, run on template updates only) is never calibrated:
    in an INT8 model it is an FP16 engine.
    """
    return 'fp16' if role == 'fusion' and precision == 'int8' else precision


def engine_stem(spec: ModelSpec, role: str) -> str:
    """Name one graph of a model in the cache: '<model name>-<role>'."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', f'{spec.name}-{role}')


def build_command(spec: ModelSpec, precision: str, cache_dir: Path) -> str:
    """Return the siam-model command that builds the engines of ``spec`` into ``cache_dir``."""
    command = f'siam-model build-engine {spec.root} --{precision}'
    if precision == 'int8':
        command += ' --calib FRAMES_DIR'
    if Path(cache_dir) != default_cache_dir():
        command += f' --cache {cache_dir}'
    return command


def ensure_engines(spec: ModelSpec, precision: str = 'fp16',
                   info: Optional[RuntimeInfo] = None, cache_dir=None,
                   allow_build: bool = True, force: bool = False,
                   calibration: Optional[Calibration] = None, workspace_mb: int = 1024,
                   roles: Optional[Sequence[str]] = None,
                   device: int = 0) -> Dict[str, CachedEngine]:
    """
    Return engines for the graphs of model ``spec`` (role -> CachedEngine), cached or built.

    ``roles`` limits the call to some graphs (default ``engine_roles``: both, and the
    template-fusion graph when the model has one, see ``role_precision``). INT8 engines are
    never built
    implicitly: without ``calibration`` a missing INT8 engine is an error that says which
    command builds it. Under ``force`` a cached calibration table is not reused.
    """
    if precision not in PRECISIONS:
        raise BackendError(f'precision {precision!r} not in {PRECISIONS}')
    info = info or runtime_info(device)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    batches: Optional[Batches] = None
    out: Dict[str, CachedEngine] = {}
    for role in roles or engine_roles(spec):
        onnx_path = spec.path(role)
        role_p = role_precision(role, precision)
        key = engine_key(onnx_path, info.trt_version, info.gpu_name, role_p)
        stem = engine_stem(spec, role)
        hit = None if force else lookup_engine(cache_dir, stem, key)
        if hit is not None:
            out[role] = CachedEngine(role, hit, key, False, read_sidecar(hit).io)
            continue
        if not allow_build or (role_p == 'int8' and calibration is None):
            raise BackendError(f'no usable {role_p} engine for {spec.name} {role} in '
                               f'{cache_dir}; build it with '
                               f'`{build_command(spec, precision, cache_dir)}`')
        calibrator = None
        table = None
        if role_p == 'int8':
            if batches is None:
                batches = calibration.load()
            if role not in batches:
                raise BackendError(f'the calibration crops have no batches for {role}')
            table = calibration_table(cache_dir, stem, key, calibration.digest)
            calibrator = make_calibrator(batches[role], cuda_api(device), table,
                                         read_cache=not force)

        def build(path, calibrator=calibrator, role_p=role_p):
            return build_engine(path, role_p, spec.tracker.step.exemplar_size,
                                spec.tracker.step.instance_size, calibrator, workspace_mb)

        try:
            path, record, _ = cached_engine(onnx_path, key, build, cache_dir, stem=stem,
                                            force=True)
        finally:
            if calibrator is not None:
                calibrator.close()
        note = ''
        if calibrator is not None:
            for old in cache_dir.glob(f'{stem}-int8-*{CALIB_SUFFIX}'):
                if old != table:
                    old.unlink()
            note = (f'calibrated on {len(batches[role])} crop batches, table {table}'
                    if calibrator.calibrated else f'calibration table reused: {table}')
        out[role] = CachedEngine(role, path, key, True, record.io, note)
    return out
