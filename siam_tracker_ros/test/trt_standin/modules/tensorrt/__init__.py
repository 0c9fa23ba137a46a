"""
Stand-in for the TensorRT 10 Python bindings, run on ONNX Runtime (CPU).

It implements the TensorRT 10.3 Python calls the project uses, with the signatures, return
values and failure modes of the pybind11 bindings (python/src/infer/pyCore.cpp, pyInt8.cpp,
onnx-tensorrt's parser): wrong argument types raise TypeError, API failures return False /
None and log through the Logger, as TensorRT does. The "engine" is the ONNX graph plus a
header; executing it runs the graph with ONNX Runtime on the simulated GPU's device memory
(``_standin_gpu``), so outputs are real and every buffer access is bounds-checked.

What it checks beyond types:

* the parser refuses Conv nodes whose weights are not constants (TensorRT builds
  multi-input convolutions only in quantized networks);
* a dynamic input needs an optimization profile; ``set_input_shape`` returns False outside it;
* ``execute_async_v3`` needs every input shape set and every I/O address bound to device
  memory large enough, on an existing stream, with the engine's device current;
* engines from another TensorRT version, or damaged ones, deserialize to None;
* INT8 builds run the IInt8EntropyCalibrator2 contract (read cache, get_batch until None,
  write cache) and read the calibration batches from device memory;
* a second Logger given to a Builder/Runtime triggers TensorRT's "logger differs" warning.

``STANDIN`` lets a test steer it (``reverse_io``: engines built from then on list their I/O
tensors in reverse order; ``fail_execute``) and read what happened (``builds``, ``messages``).
"""
import enum
import hashlib
import json
import struct
import sys

import _standin_gpu as gpu
import numpy as np
import onnx
import onnxruntime as ort

__version__ = '10.3.0'
_VERSION_INT = 100300
_MAGIC = b'STANDIN-TRT-PLAN'


class _Controls:
    def __init__(self):
        self.reverse_io = False
        self.fail_execute = False
        self.builds = []
        self.messages = []

    def reset(self):
        self.__init__()


STANDIN = _Controls()


# --------------------------------------------------------------------------- enums and types

class DataType(enum.IntEnum):
    """Tensor element types."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


float32 = DataType.FLOAT
float16 = DataType.HALF
int8 = DataType.INT8
int32 = DataType.INT32
int64 = DataType.INT64
bool = DataType.BOOL  # noqa: A001 - TensorRT's own name

_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
       DataType.INT64: np.int64}
_ONNX_TYPES = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
               onnx.TensorProto.INT32: DataType.INT32, onnx.TensorProto.INT64: DataType.INT64,
               onnx.TensorProto.BOOL: DataType.BOOL, onnx.TensorProto.UINT8: DataType.UINT8,
               onnx.TensorProto.INT8: DataType.INT8}


def nptype(trt_type):
    """Return the numpy type of a TensorRT DataType."""
    if trt_type in _NP:
        return _NP[trt_type]
    raise TypeError('Could not resolve TensorRT datatype to an equivalent numpy datatype.')


def volume(iterable):
    """Product of the dimensions."""
    out = 1
    for d in iterable:
        out *= d
    return out


class TensorIOMode(enum.IntEnum):
    """Whether a tensor is an engine input or output."""

    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    """Memory pools of a builder config."""

    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class BuilderFlag(enum.IntEnum):
    """Builder flags (TensorRT 10 values)."""

    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    SAFETY_SCOPE = 8
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10
    DIRECT_IO = 11
    REJECT_EMPTY_ALGORITHMS = 12
    VERSION_COMPATIBLE = 13
    EXCLUDE_LEAN_RUNTIME = 14
    FP8 = 15
    ERROR_ON_TIMING_CACHE_MISS = 16
    BF16 = 17


class NetworkDefinitionCreationFlag(enum.IntEnum):
    """Network creation flags (EXPLICIT_BATCH is ignored in TensorRT 10)."""

    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class CalibrationAlgoType(enum.IntEnum):
    """INT8 calibration algorithms."""

    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


def _check(value, types, what):
    if not isinstance(value, types) or (isinstance(value, (int, np.integer))
                                        and type(value).__name__ == 'bool'):
        names = types.__name__ if isinstance(types, type) else '/'.join(t.__name__ for t in types)
        raise TypeError(f'{what}(): incompatible function arguments: expected {names}, got '
                        f'{type(value).__name__}')


def _check_int(value, what):
    if isinstance(value, enum.Enum) or not isinstance(value, (int, np.integer)) or \
            type(value).__name__ == 'bool':
        raise TypeError(f'{what}(): incompatible function arguments: expected int, got '
                        f'{type(value).__name__}')
    return int(value)


class Dims:
    """A tensor shape (TensorRT's Dims: indexable, iterable, comparable with tuples)."""

    MAX_DIMS = 8

    def __init__(self, shape=()):
        self._d = tuple(int(d) for d in shape)

    def __len__(self):
        return len(self._d)

    def __getitem__(self, index):
        return self._d[index]

    def __iter__(self):
        return iter(self._d)

    def __eq__(self, other):
        if isinstance(other, Dims):
            return self._d == other._d
        if isinstance(other, (tuple, list)):
            return self._d == tuple(other)
        return NotImplemented

    def __hash__(self):
        return hash(self._d)

    def __repr__(self):
        return repr(self._d)


def _dims(value, what) -> Dims:
    """Dims from Dims, or a tuple/list of ints (pybind11's implicit conversions)."""
    if isinstance(value, Dims):
        return value
    if isinstance(value, (tuple, list)) and all(
            isinstance(d, (int, np.integer)) and type(d).__name__ != 'bool' for d in value):
        if len(value) > Dims.MAX_DIMS:
            raise ValueError(f'{what}(): at most {Dims.MAX_DIMS} dimensions')
        return Dims(value)
    raise TypeError(f'{what}(): incompatible function arguments: a shape must be Dims or a '
                    f'tuple/list of ints, got {type(value).__name__}')


# --------------------------------------------------------------------------------- logging

class ILogger:
    """Logger interface."""

    class Severity(enum.IntEnum):
        """Message severities."""

        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def log(self, severity, msg):
        """Receive one message."""
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


class Logger(ILogger):
    """The stock logger: prints messages at or above ``min_severity`` to stderr."""

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        _check(min_severity, ILogger.Severity, 'Logger.__init__')
        self.min_severity = min_severity

    def log(self, severity, msg):
        """Print and record one message."""
        STANDIN.messages.append((severity.name, msg))
        if severity <= self.min_severity:
            print(f'[TRT] [{severity.name[0]}] {msg}', file=sys.stderr)


_GLOBAL = {'logger': None}


def _adopt_logger(logger, what):
    _check(logger, ILogger, what)
    if _GLOBAL['logger'] is None:
        _GLOBAL['logger'] = logger
    elif _GLOBAL['logger'] is not logger:
        logger.log(ILogger.WARNING, f'[{what}] The logger passed into createInfer{what} '
                   'differs from one already provided for an existing builder, runtime, or '
                   'refitter. Uses of the global logger, returned by nvinfer1::getLogger(), '
                   'will return the existing value.')


def _error(logger, msg):
    logger.log(ILogger.ERROR, msg)


# ------------------------------------------------------------------------------- network

class ITensor:
    """A network input or output."""

    def __init__(self, name, shape, dtype, is_input):
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype
        self.is_network_input = is_input
        self.is_network_output = not is_input


class INetworkDefinition:
    """A network, filled by OnnxParser.parse."""

    def __init__(self, flags):
        self._flags = flags
        self._inputs = []
        self._outputs = []
        self._onnx = None
        self.name = 'Unnamed Network 0'

    @property
    def num_inputs(self):
        """Count the network inputs."""
        return len(self._inputs)

    @property
    def num_outputs(self):
        """Count the network outputs."""
        return len(self._outputs)

    def get_input(self, index):
        """Return the index-th input (ONNX order)."""
        return self._inputs[_check_int(index, 'get_input')]

    def get_output(self, index):
        """Return the index-th output (ONNX order)."""
        return self._outputs[_check_int(index, 'get_output')]

    @property
    def has_implicit_batch_dimension(self):
        """Return False (always, in TensorRT 10)."""
        return False


class ParserError:
    """One error of OnnxParser.parse."""

    def __init__(self, node_index, node_name, op, desc):
        self._node, self._name, self._op, self._desc = node_index, node_name, op, desc

    def code(self):
        """Give the error code: UNSUPPORTED_NODE here."""
        return 'UNSUPPORTED_NODE'

    def desc(self):
        """Describe what went wrong."""
        return self._desc

    def node(self):
        """Give the index of the failing node, or -1 for the whole model."""
        return self._node

    def node_name(self):
        """Return the name of the failing node."""
        return self._name

    def __str__(self):
        return (f'In node {self._node} with name: {self._name} and operator: {self._op} '
                f'(importConv): UNSUPPORTED_NODE: {self._desc}')


def _dims_of(value_info):
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField('dim_value') else -1)
    return tuple(dims)


def _runtime_weight_convs(graph):
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == 'Constant'}
    producers = {o: n for n in graph.node for o in n.output}

    def constant(name, depth=0):
        if name in constants:
            return True
        node = producers.get(name)
        if node is None or depth > 64:
            return False
        if node.op_type in ('Identity', 'DequantizeLinear'):
            return constant(node.input[0], depth + 1)
        return False

    return [(i, n.name or f'{n.op_type}_{i}', n.op_type) for i, n in enumerate(graph.node)
            if n.op_type in ('Conv', 'ConvTranspose') and not constant(n.input[1])]


class OnnxParser:
    """ONNX -> network (onnx-tensorrt's rules for the checks above)."""

    def __init__(self, network, logger):
        _check(network, INetworkDefinition, 'OnnxParser.__init__')
        _check(logger, ILogger, 'OnnxParser.__init__')
        self._network = network
        self._logger = logger
        self._errors = []

    @property
    def num_errors(self):
        """Count the errors of the last parse."""
        return len(self._errors)

    def get_error(self, index):
        """Return the index-th error."""
        return self._errors[_check_int(index, 'get_error')]

    def clear_errors(self):
        """Forget the errors."""
        self._errors = []

    def parse(self, model, path=None):
        """Parse serialized ONNX (a buffer); True on success."""
        buffers = (bytes, bytearray, memoryview, np.ndarray)
        if isinstance(model, str) or not isinstance(model, buffers):
            raise TypeError('parse(): incompatible function arguments: model must be a buffer '
                            f'(bytes), got {type(model).__name__}')
        data = bytes(memoryview(model))
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # noqa: BLE001
            self._errors.append(ParserError(-1, '', '', f'Failed to parse ONNX model: {exc}'))
            return False
        bad = _runtime_weight_convs(proto.graph)
        for index, name, op in bad:
            self._errors.append(ParserError(
                index, name, op, 'Assertion failed: inputs.at(1).is_weights() && "TensorRT '
                'only supports multi-input conv for explicit precision QAT networks!"'))
        if bad:
            _error(self._logger, f'ModelImporter.cpp: failed to import node {bad[0][1]}')
            return False
        inits = {i.name for i in proto.graph.initializer}
        net = self._network
        net._inputs = [ITensor(v.name, _dims_of(v), _ONNX_TYPES[v.type.tensor_type.elem_type],
                               True) for v in proto.graph.input if v.name not in inits]
        net._outputs = [ITensor(v.name, _dims_of(v),
                                _ONNX_TYPES[v.type.tensor_type.elem_type], False)
                        for v in proto.graph.output]
        net._onnx = data
        return True


# ------------------------------------------------------------------------------- building

class IOptimizationProfile:
    """(min, opt, max) shapes of dynamic inputs."""

    def __init__(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's argument names
        """Set the shapes of one input; RuntimeError when they are inconsistent."""
        _check(input, str, 'set_shape')
        lo, mid, hi = (_dims(d, 'set_shape') for d in (min, opt, max))
        if not (len(lo) == len(mid) == len(hi)) or any(
                not a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise RuntimeError('Shape provided for min is inconsistent with other shapes.')
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input):  # noqa: A002
        """Return [min, opt, max] of one input ([] when unset)."""
        return list(self._shapes.get(input, ()))


class IInt8Calibrator:
    """Application-implemented INT8 calibrator (call the base __init__ when overriding)."""

    def __init__(self):
        self._standin_base_init = True

    def get_batch_size(self):
        """Return the batch size of each batch."""
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::getBatchSize"')

    def get_algorithm(self):
        """Return the calibration algorithm."""
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::getAlgorithm"')

    def get_batch(self, names):
        """Return device addresses of the next batch, one per name, or None when done."""
        return []

    def read_calibration_cache(self):
        """Return a calibration table to reuse, or None."""
        return None

    def write_calibration_cache(self, cache):
        """Store the calibration table (a memoryview)."""


class IInt8EntropyCalibrator2(IInt8Calibrator):
    """Entropy calibration 2 (the recommended INT8 calibrator)."""

    def get_algorithm(self):
        """Return ENTROPY_CALIBRATION_2."""
        return CalibrationAlgoType.ENTROPY_CALIBRATION_2


class IBuilderConfig:
    """Builder configuration (TF32 is on by default, as on Ampere/Orin GPUs)."""

    def __init__(self):
        self._flags = {BuilderFlag.TF32}
        self._pools = {MemoryPoolType.WORKSPACE: 8 << 30}
        self._profiles = []
        self._calibration_profile = None
        self._calibrator = None

    @property
    def flags(self):
        """Return the flags as a bit mask."""
        return sum(1 << int(f) for f in self._flags)

    def set_flag(self, flag):
        """Set one BuilderFlag."""
        _check(flag, BuilderFlag, 'set_flag')
        self._flags.add(flag)

    def clear_flag(self, flag):
        """Clear one BuilderFlag."""
        _check(flag, BuilderFlag, 'clear_flag')
        self._flags.discard(flag)

    def get_flag(self, flag):
        """Tell whether a BuilderFlag is set."""
        _check(flag, BuilderFlag, 'get_flag')
        return flag in self._flags

    def set_memory_pool_limit(self, pool, pool_size):
        """Limit a memory pool (bytes)."""
        _check(pool, MemoryPoolType, 'set_memory_pool_limit')
        self._pools[pool] = _check_int(pool_size, 'set_memory_pool_limit')

    def get_memory_pool_limit(self, pool):
        """Return a memory pool's limit (bytes)."""
        _check(pool, MemoryPoolType, 'get_memory_pool_limit')
        return self._pools[pool]

    def add_optimization_profile(self, profile):
        """Add a profile; returns its index (-1 when invalid)."""
        _check(profile, IOptimizationProfile, 'add_optimization_profile')
        if not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self):
        """Count the profiles added."""
        return len(self._profiles)

    def set_calibration_profile(self, profile):
        """Set the profile calibration runs at; True when accepted."""
        _check(profile, IOptimizationProfile, 'set_calibration_profile')
        if not profile._shapes:
            return False
        self._calibration_profile = profile
        return True

    def get_calibration_profile(self):
        """Return the calibration profile (or None)."""
        return self._calibration_profile

    @property
    def int8_calibrator(self):
        """Get or set the INT8 calibrator (deprecated in TensorRT 10.1, still honoured)."""
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator):
        if calibrator is not None:
            _check(calibrator, IInt8Calibrator, 'int8_calibrator')
            if not getattr(calibrator, '_standin_base_init', False):
                raise TypeError(f'{type(calibrator).__name__}.__init__() must be called when '
                                'overriding __init__')
        self._calibrator = calibrator


class IHostMemory(bytes):
    """A serialized engine (a buffer)."""

    @property
    def nbytes(self):
        """Return the size in bytes."""
        return len(self)

    @property
    def dtype(self):
        """Return the element type of the buffer."""
        return DataType.UINT8


def _session(onnx_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=options,
                                providers=['CPUExecutionProvider'])


def _calibration_table(stats):
    lines = [f'TRT-{_VERSION_INT}-EntropyCalibration2']
    for name, amax in sorted(stats.items()):
        scale = struct.unpack('>I', struct.pack('>f', max(amax, 1e-8) / 127.0))[0]
        lines.append(f'{name}: {scale:08x}')
    return ('\n'.join(lines) + '\n').encode()


class Builder:
    """Builds serialized engines from networks."""

    def __init__(self, logger):
        _adopt_logger(logger, 'Builder')
        self.logger = logger
        self.platform_has_tf32 = True
        self.platform_has_fast_fp16 = True
        self.platform_has_fast_int8 = True

    def create_network(self, flags=0):
        """Create an empty network."""
        return INetworkDefinition(_check_int(flags, 'create_network'))

    def create_builder_config(self):
        """Create a fresh config (TF32 set)."""
        return IBuilderConfig()

    def create_optimization_profile(self):
        """Create an empty profile."""
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        """Build a serialized engine (IHostMemory), or None with the error logged."""
        _check(network, INetworkDefinition, 'build_serialized_network')
        _check(config, IBuilderConfig, 'build_serialized_network')
        if network._onnx is None:
            _error(self.logger, 'Network must have at least one output')
            return None
        profile = {}
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic:
            if not config._profiles:
                _error(self.logger, 'Network has dynamic or shape inputs, but no optimization '
                       'profile has been defined.')
                return None
            shapes = config._profiles[0]._shapes
            for tensor in dynamic:
                if tensor.name not in shapes:
                    _error(self.logger, f'{tensor.name}: dynamic input is missing dimensions '
                           'in profile 0.')
                    return None
                for dims in shapes[tensor.name]:
                    if len(dims) != len(tensor.shape) or any(
                            s >= 0 and s != d for s, d in zip(tensor.shape, dims)):
                        _error(self.logger, f'{tensor.name}: profile dimensions {dims} do not '
                               f'match the network input {tensor.shape}')
                        return None
                profile[tensor.name] = [list(d) for d in shapes[tensor.name]]
        record = {'flags': sorted(f.name for f in config._flags), 'calibrated': None,
                  'calibration_batches': 0, 'calibration_amax': {},
                  'inputs': [t.name for t in network._inputs]}
        if BuilderFlag.INT8 in config._flags:
            if not self._calibrate(network, config, profile, record):
                return None
        STANDIN.builds.append(record)
        order = [t.name for t in network._inputs] + [t.name for t in network._outputs]
        if STANDIN.reverse_io:
            order.reverse()
        header = {
            'version': __version__, 'capability': list(gpu.CAPABILITY), 'order': order,
            'tensors': {t.name: {'shape': list(t.shape), 'dtype': int(t.dtype),
                                 'input': t.is_network_input}
                        for t in network._inputs + network._outputs},
            'profile': profile,
            'fp16': len({BuilderFlag.FP16, BuilderFlag.INT8} & config._flags) > 0}
        head = json.dumps(header).encode()
        body = _MAGIC + struct.pack('<I', len(head)) + head + network._onnx
        return IHostMemory(body + hashlib.sha256(body).digest())

    def _calibrate(self, network, config, profile, record):
        calibrator = config._calibrator
        if calibrator is None:
            _error(self.logger, 'Calibration failure occurred with no scaling factors detected. '
                   'This could be due to no int8 calibrator or insufficient custom scales for '
                   'network layers.')
            return False
        batch_size = calibrator.get_batch_size()
        cache = calibrator.read_calibration_cache()
        if cache is not None:
            text = bytes(memoryview(cache))
            if text.startswith(f'TRT-{_VERSION_INT}-EntropyCalibration2\n'.encode()):
                record['calibrated'] = False
                return True
            self.logger.log(ILogger.WARNING, 'Calibration table version mismatch: '
                            'recalibrating')
        names = [t.name for t in network._inputs]
        cal_shapes = {}
        for tensor in network._inputs:
            shape = tuple(tensor.shape)
            if any(d < 0 for d in shape):
                source = config._calibration_profile
                if source is None or tensor.name not in source._shapes:
                    _error(self.logger, 'Calibration profile not set for a dynamic input')
                    return False
                shape = tuple(source._shapes[tensor.name][1])
            cal_shapes[tensor.name] = (batch_size,) + shape[1:]
        session = _session(network._onnx)
        amax = {}
        while True:
            try:
                pointers = calibrator.get_batch(names)
            except Exception as exc:  # noqa: BLE001 - the bindings print and stop
                print(f'[ERROR] Exception caught in get_batch(): {exc}', file=sys.stderr)
                pointers = None
            if pointers is None or len(pointers) == 0:
                break
            if len(pointers) != len(names):
                _error(self.logger, f'get_batch returned {len(pointers)} pointers for '
                       f'{len(names)} inputs')
                return False
            feeds = {}
            for name, ptr in zip(names, pointers):
                ptr = _check_int(ptr, 'get_batch')
                shape = cal_shapes[name]
                nbytes = volume(shape) * 4
                try:
                    feeds[name] = np.frombuffer(gpu.read(ptr, nbytes), np.float32).reshape(shape)
                except gpu.GpuError as exc:
                    _error(self.logger, f'Cuda Runtime (an illegal memory access was '
                           f'encountered) reading calibration input {name}: {exc}')
                    return False
            outs = session.run(None, feeds)
            values = dict(feeds, **{o.name: v for o, v in zip(session.get_outputs(), outs)})
            for name, value in values.items():
                amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()))
            record['calibration_batches'] += 1
        if not record['calibration_batches']:
            _error(self.logger, 'Calibration failure occurred with no scaling factors detected.')
            return False
        record['calibrated'] = True
        record['calibration_amax'] = amax
        calibrator.write_calibration_cache(memoryview(_calibration_table(amax)))
        return True


# ------------------------------------------------------------------------------- runtime

class Runtime:
    """Deserializes engines."""

    def __init__(self, logger):
        _adopt_logger(logger, 'Runtime')
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        """Return an ICudaEngine, or None (error logged) for a plan it cannot use."""
        if isinstance(serialized_engine, str) or not isinstance(
                serialized_engine, (bytes, bytearray, memoryview, np.ndarray)):
            raise TypeError('deserialize_cuda_engine(): incompatible function arguments: a '
                            f'buffer is needed, got {type(serialized_engine).__name__}')
        data = bytes(memoryview(serialized_engine))
        if len(data) < len(_MAGIC) + 36 or not data.startswith(_MAGIC) or \
                hashlib.sha256(data[:-32]).digest() != data[-32:]:
            _error(self.logger, '1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: '
                   'Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed.'
                   'Magic tag does not match)')
            return None
        size = struct.unpack('<I', data[len(_MAGIC):len(_MAGIC) + 4])[0]
        start = len(_MAGIC) + 4
        header = json.loads(data[start:start + size])
        if header['version'] != __version__:
            _error(self.logger, 'The engine plan file is not compatible with this version of '
                   f'TensorRT, expecting library version {__version__} got '
                   f'{header["version"]}, please rebuild.')
            return None
        if tuple(header['capability']) != gpu.CAPABILITY:
            _error(self.logger, 'The engine plan file is generated on an incompatible device.')
            return None
        return ICudaEngine(header, data[start + size:-32], self)


class ICudaEngine:
    """An engine: I/O tensors by name, execution contexts."""

    def __init__(self, header, onnx_bytes, runtime):
        self._header = header
        self._tensors = header['tensors']
        self._order = header['order']
        self._session = _session(onnx_bytes)
        self._runtime = runtime
        self._device = gpu.current_device()
        self.name = 'standin-engine'

    @property
    def num_io_tensors(self):
        """Count the I/O tensors."""
        return len(self._order)

    @property
    def num_optimization_profiles(self):
        """Count the profiles in the engine (at least 1)."""
        return 1

    def get_tensor_name(self, index):
        """Return the index-th I/O tensor's name (None out of range); no documented order."""
        index = _check_int(index, 'get_tensor_name')
        return self._order[index] if 0 <= index < len(self._order) else None

    def get_tensor_mode(self, name):
        """Return INPUT, OUTPUT, or NONE for a name that is not an I/O tensor."""
        _check(name, str, 'get_tensor_mode')
        if name not in self._tensors:
            return TensorIOMode.NONE
        return TensorIOMode.INPUT if self._tensors[name]['input'] else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        """Return the build-time shape (-1 for dynamic dimensions)."""
        _check(name, str, 'get_tensor_shape')
        if name not in self._tensors:
            _error(self._runtime.logger, f'getTensorShape: {name} is not an I/O tensor')
            return Dims()
        return Dims(self._tensors[name]['shape'])

    def get_tensor_dtype(self, name):
        """Return the element type of an I/O tensor."""
        _check(name, str, 'get_tensor_dtype')
        return DataType(self._tensors[name]['dtype'])

    def get_tensor_profile_shape(self, name, profile_index):
        """Return [min, opt, max] of an input in a profile."""
        _check(name, str, 'get_tensor_profile_shape')
        if _check_int(profile_index, 'get_tensor_profile_shape') != 0:
            raise RuntimeError('profile index out of range')
        if name in self._header['profile']:
            return [Dims(d) for d in self._header['profile'][name]]
        if name in self._tensors and self._tensors[name]['input']:
            return [Dims(self._tensors[name]['shape'])] * 3
        raise RuntimeError(f'{name} is not an input')

    def create_execution_context(self):
        """Create an execution context."""
        return IExecutionContext(self)


class IExecutionContext:
    """Shapes, addresses and execute_async_v3."""

    def __init__(self, engine):
        self.engine = engine
        self._shapes = {}
        self._addresses = {}
        self._output_shapes = {}
        for name, t in engine._tensors.items():
            if t['input'] and all(d >= 0 for d in t['shape']):
                self._shapes[name] = tuple(t['shape'])

    def _log(self, msg):
        _error(self.engine._runtime.logger, msg)

    def set_input_shape(self, name, shape):
        """Set a dynamic input's shape; False (error logged) outside the profile."""
        _check(name, str, 'set_input_shape')
        shape = tuple(_dims(shape, 'set_input_shape'))
        tensor = self.engine._tensors.get(name)
        if tensor is None or not tensor['input']:
            self._log(f'setInputShape: {name} is not an input tensor')
            return False
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            self._log(f'IExecutionContext::setInputShape: Error Code 3: API Usage Error '
                      f'(Parameter check failed, condition: satisfyProfile. Set dimension '
                      f'{list(shape)} for tensor {name} does not satisfy any optimization '
                      f'profiles. Valid range for profile 0: {list(lo)}..{list(hi)}.)')
            return False
        self._shapes[name] = shape
        return True

    def _inputs(self):
        return [n for n, t in self.engine._tensors.items() if t['input']]

    def get_tensor_shape(self, name):
        """Return an input's shape, or an output's given the current input shapes."""
        _check(name, str, 'get_tensor_shape')
        tensor = self.engine._tensors.get(name)
        if tensor is None:
            return Dims()
        if tensor['input']:
            return Dims(self._shapes.get(name, tensor['shape']))
        if all(d >= 0 for d in tensor['shape']):
            return Dims(tensor['shape'])
        key = tuple((n, self._shapes.get(n)) for n in self._inputs())
        if any(s is None for _, s in key):
            return Dims(tensor['shape'])
        if key not in self._output_shapes:
            feeds = {n: np.zeros(s, np.float32) for n, s in key}
            outs = self.engine._session.run(None, feeds)
            self._output_shapes[key] = {o.name: v.shape for o, v in
                                        zip(self.engine._session.get_outputs(), outs)}
        return Dims(self._output_shapes[key][name])

    def set_tensor_address(self, name, memory):
        """Bind an I/O tensor to a device address; False for an unknown name."""
        _check(name, str, 'set_tensor_address')
        memory = _check_int(memory, 'set_tensor_address')
        if name not in self.engine._tensors:
            self._log(f'setTensorAddress: {name} is not an I/O tensor')
            return False
        if memory % 4:
            self._log(f'setTensorAddress: address of {name} is not aligned')
            return False
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name):
        """Return the address bound to a tensor (0 when none)."""
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle):
        """Queue inference on a stream; False (error logged) when something is not set up."""
        stream = _check_int(stream_handle, 'execute_async_v3')
        engine = self.engine
        if gpu.current_device() != engine._device:
            self._log("enqueueV3: the engine's device is not current on this thread")
            return False
        if stream not in gpu.STATE.streams:
            self._log(f'enqueueV3: invalid stream {stream:#x}')
            return False
        if STANDIN.fail_execute:
            self._log('enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access was '
                      'encountered)')
            return False
        shapes = {}
        for name, tensor in engine._tensors.items():
            shape = tuple(self.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                self._log(f'enqueueV3: input shape of {name} not specified')
                return False
            if name not in self._addresses:
                self._log(f'enqueueV3: Error Code 3: API Usage Error (address of {name} not '
                          'set)')
                return False
            nbytes = volume(shape) * np.dtype(nptype(DataType(tensor['dtype']))).itemsize
            try:
                gpu.check_device_range(self._addresses[name], nbytes)
            except gpu.GpuError as exc:
                self._log(f'enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access '
                          f'was encountered) at {name}: {exc}')
                return False
            shapes[name] = shape
        addresses = dict(self._addresses)
        fp16 = engine._header['fp16']

        def work():
            feeds = {}
            for name in self._inputs():
                dtype = nptype(DataType(engine._tensors[name]['dtype']))
                nbytes = volume(shapes[name]) * np.dtype(dtype).itemsize
                feeds[name] = np.frombuffer(gpu.read(addresses[name], nbytes),
                                            dtype).reshape(shapes[name])
                if fp16:
                    feeds[name] = feeds[name].astype(np.float16).astype(dtype)
            outs = engine._session.run(None, feeds)
            for out, value in zip(engine._session.get_outputs(), outs):
                if fp16:
                    value = value.astype(np.float16).astype(value.dtype)
                gpu.write(addresses[out.name], np.ascontiguousarray(value).tobytes())

        gpu.enqueue(stream, work)
        return True
