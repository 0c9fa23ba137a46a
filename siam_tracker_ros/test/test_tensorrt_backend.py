"""
TensorRT backend and engine builder: cache, build, run, through stand-in TensorRT and CUDA.

The key, cache and profile logic are plain functions. Building and running engines is driven
through the stand-in ``tensorrt`` and ``cuda`` modules of ``trt_standin`` (TensorRT 10
Python API, executed with ONNX Runtime on a simulated GPU that bounds-checks every buffer),
which the tests put on ``sys.path`` only while they run. The real-GPU test at the end runs
only where TensorRT 10 and an NVIDIA GPU exist.
"""
import json
import logging
import os

import cv2
import numpy as np
import onnx
import pytest

from shared_data import MODELS, need
from siam_tracker_ros.backends import engine_build as eb
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.backends.cuda import CudaUnavailable
from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from siam_tracker_ros.backends.registry import choose_backend, create_backend
from siam_tracker_ros.backends.tensorrt_backend import parse_device
from siam_tracker_ros.cli import model_tools as mt
from siam_tracker_ros.cli import siam_model
import trt_standin
from trt_standin import models

SHA = 'ab' * 32


def _key(**changes):
    fields = {'onnx_sha256': SHA, 'trt_version': '10.3.0', 'gpu_name': 'Orin (sm_87)',
              'precision': 'fp16'}
    fields.update(changes)
    return eb.EngineKey(**fields)


def _tensorrt_skip_reason():
    try:
        eb.runtime_info()
    except BackendError as exc:
        return str(exc)
    return ''


# ------------------------------------------------------------------------------------------
# key

def test_key_is_stable_and_changes_with_every_field():
    base = _key()
    assert base.digest == _key().digest
    assert len(base.digest) == 64
    variants = [_key(onnx_sha256='cd' * 32), _key(trt_version='10.7.0'),
                _key(gpu_name='NVIDIA GeForce RTX 4090 (sm_89)'), _key(precision='int8'),
                _key(precision='fp32')]
    digests = {base.digest} | {k.digest for k in variants}
    assert len(digests) == 1 + len(variants)
    # Cosmetic whitespace in the device name does not force a rebuild.
    assert _key(gpu_name='  Orin   (sm_87) ').digest == base.digest
    assert base.file_name('model-search') == f'model-search-fp16-{base.digest[:16]}.engine'


def test_key_rejects_bad_fields():
    with pytest.raises(ValueError, match='precision'):
        _key(precision='bf16')
    with pytest.raises(ValueError, match='gpu_name'):
        _key(gpu_name=' ')


def test_engine_key_hashes_the_onnx_content(tmp_path):
    a, b = tmp_path / 'a.onnx', tmp_path / 'b.onnx'
    a.write_bytes(b'graph one')
    b.write_bytes(b'graph one')
    ka = eb.engine_key(a, '10.3.0', 'Orin', 'fp16')
    assert ka == eb.engine_key(b, '10.3.0', 'Orin', 'fp16')  # same bytes, same key
    b.write_bytes(b'graph two')
    assert eb.engine_key(b, '10.3.0', 'Orin', 'fp16').digest != ka.digest


# ------------------------------------------------------------------------------------------
# cache

IO = eb.EngineIO(('search', 'zf'), ('cls', 'reg'))


class _Builder:
    """Stands in for TensorRT's builder: serialises the key it was asked for."""

    def __init__(self):
        self.calls = 0

    def __call__(self, key):
        def build(onnx_path):
            self.calls += 1
            return eb.BuiltEngine(f'engine of {onnx_path.name} for {key.digest}'.encode(), IO)
        return build


def test_cache_builds_once_then_reuses(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    cache = tmp_path / 'cache'
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin (sm_87)', 'fp16')
    builder = _Builder()
    path, record, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')
    assert built and builder.calls == 1
    assert path.read_bytes() == f'engine of search.onnx for {key.digest}'.encode()
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['onnx_sha256'] == key.onnx_sha256 and sidecar['precision'] == 'fp16'
    assert (sidecar['inputs'], sidecar['outputs']) == (['search', 'zf'], ['cls', 'reg'])
    assert sidecar['engine_bytes'] == path.stat().st_size and record.io == IO
    again, record, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')
    assert (again, built, builder.calls, record.io) == (path, False, 1, IO)
    forced, _, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search',
                                        force=True)
    assert forced == path and built and builder.calls == 2


def test_cache_rebuilds_when_any_key_field_changes(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph v1')
    cache = tmp_path / 'cache'
    builder = _Builder()

    def get(version='10.3.0', gpu='Orin (sm_87)', precision='fp16'):
        key = eb.engine_key(onnx_path, version, gpu, precision)
        path, _, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')
        return path, built

    first, _ = get()
    newer_trt, built = get(version='10.7.0')
    assert built and newer_trt != first
    assert not first.exists() and not first.with_suffix('.json').exists()  # replaced
    other_gpu, built = get(version='10.7.0', gpu='NVIDIA RTX A2000 (sm_86)')
    assert built and not newer_trt.exists()
    int8, built = get(version='10.7.0', gpu='NVIDIA RTX A2000 (sm_86)', precision='int8')
    assert built and other_gpu.exists()  # other precisions are kept
    onnx_path.write_bytes(b'graph v2')  # re-imported model
    new_graph, built = get(version='10.7.0', gpu='NVIDIA RTX A2000 (sm_86)')
    assert built and not other_gpu.exists() and int8.exists()
    assert builder.calls == 5
    assert sorted(p.name for p in cache.glob('*.engine')) == sorted([new_graph.name, int8.name])


def test_cache_ignores_an_engine_whose_sidecar_names_another_key(tmp_path):
    onnx_path = tmp_path / 'template.onnx'
    onnx_path.write_bytes(b'graph')
    cache = tmp_path / 'cache'
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    builder = _Builder()
    path, _, _ = eb.cached_engine(onnx_path, key, builder(key), cache)
    path.with_suffix('.json').write_text('{"precision": "fp16"}')  # truncated record
    assert eb.lookup_engine(cache, 'template', key) is None
    _, _, built = eb.cached_engine(onnx_path, key, builder(key), cache)
    assert built and eb.lookup_engine(cache, 'template', key) == path


def test_cache_misses_a_truncated_or_altered_engine_file(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    path, _, _ = eb.cached_engine(onnx_path, key, _Builder()(key), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # power cut during a write
    assert eb.lookup_engine(tmp_path, 'search', key) is None
    path.write_bytes(data[:-1] + b'?')  # same size, other bytes
    assert eb.lookup_engine(tmp_path, 'search', key) is None
    path.write_bytes(data)
    assert eb.lookup_engine(tmp_path, 'search', key) == path


def test_cache_refuses_an_empty_build(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    with pytest.raises(eb.EngineBuildError, match='no data'):
        eb.cached_engine(onnx_path, key, lambda p: eb.BuiltEngine(b'', IO), tmp_path / 'cache')
    assert not list(tmp_path.glob('cache/*.engine'))


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_cache_file_mode_follows_the_umask(tmp_path, umask, mode):
    """Another user (a systemd service) must be able to read the cache the umask allows."""
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    old = os.umask(umask)
    try:
        path, _, _ = eb.cached_engine(onnx_path, key, _Builder()(key), tmp_path / 'cache')
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert path.with_suffix('.json').stat().st_mode & 0o777 == mode


def test_cache_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(('fsync', os.path.realpath(f'/proc/self/fd/{fd}')))
        real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', os.path.realpath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(eb.os, 'fsync', fsync)
    monkeypatch.setattr(eb.os, 'replace', replace)
    path, _, _ = eb.cached_engine(onnx_path, key, _Builder()(key), tmp_path / 'cache')
    renamed = [e[1] for e in events if e[0] == 'replace']
    assert len(renamed) == 2  # engine and sidecar
    for tmp in renamed:
        assert ('fsync', tmp) in events[:events.index(('replace', tmp))], events
    assert ('fsync', str(path.parent)) in events  # the directory entry too
    # A write that fails leaves the old file and no temporary file behind.
    before = path.read_bytes()
    monkeypatch.setattr(eb.os, 'fsync', lambda fd: (_ for _ in ()).throw(OSError('disk full')))
    with pytest.raises(OSError, match='disk full'):
        eb.cached_engine(onnx_path, key, _Builder()(key), tmp_path / 'cache', force=True)
    assert path.read_bytes() == before
    assert sorted(p.suffix for p in path.parent.iterdir()) == ['.engine', '.json']


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('SIAM_ENGINE_CACHE', str(tmp_path / 'engines'))
    assert eb.default_cache_dir() == tmp_path / 'engines'
    monkeypatch.delenv('SIAM_ENGINE_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert eb.default_cache_dir() == tmp_path / 'xdg' / 'siam_tracker_ros' / 'engines'


# ------------------------------------------------------------------------------------------
# optimisation profiles

def test_static_graphs_need_no_profile():
    inputs = [('search', (1, 3, 255, 255)), ('zf0', (1, 256, 5, 5))]
    assert eb.profile_shapes(inputs, 127, 255) == {}


def test_dynamic_image_input_is_profiled_from_template_to_search():
    shapes = eb.profile_shapes([('input', (1, 3, -1, -1))], 127, 255)
    assert shapes == {'input': ((1, 3, 127, 127), (1, 3, 255, 255), (1, 3, 255, 255))}
    with pytest.raises(eb.EngineBuildError, match='static shapes'):
        eb.profile_shapes([('zf', (1, -1, 8, 8))], 127, 255)


def test_profile_of_the_imported_upstream_nanotrack_backbone(tmp_path):
    """The upstream NanoTrack import writes a backbone with free H/W: it gets a profile."""
    from siam_tracker_ros.nets.nanotrack_import import import_nanotrack
    spec = import_nanotrack(need(MODELS / 'nanotrack-v2'), tmp_path / 'nano')
    for role, expect_profile in (('backbone', True), ('head', False)):
        model = onnx.load(str(spec.path(role)))
        inputs = [(i.name, tuple(d.dim_value if d.HasField('dim_value') else -1
                                 for d in i.type.tensor_type.shape.dim))
                  for i in model.graph.input]
        shapes = eb.profile_shapes(inputs, spec.tracker.step.exemplar_size,
                                   spec.tracker.step.instance_size)
        assert bool(shapes) == expect_profile, role


# ------------------------------------------------------------------------------------------
# devices and the missing-runtime message

def test_parse_device():
    assert parse_device('cuda') == 0
    assert parse_device('cuda:1') == 1
    assert parse_device('gpu') == 0
    for bad in ('cpu', 'cuda:x', 'npu:0'):
        with pytest.raises(CudaUnavailable):
            parse_device(bad)


@pytest.fixture(scope='module')
def tiny_ts(tmp_path_factory):
    return models.template_search(tmp_path_factory.mktemp('tiny') / 'ts')


@pytest.fixture(scope='module')
def tiny_bh(tmp_path_factory):
    return models.backbone_head(tmp_path_factory.mktemp('tiny') / 'bh')


def test_backend_says_clearly_when_tensorrt_cannot_run(tiny_ts):
    reason = _tensorrt_skip_reason()
    if not reason:
        pytest.skip('TensorRT and a GPU are present here; the missing-runtime path is moot')
    with pytest.raises(CudaUnavailable) as info:
        create_backend('tensorrt', tiny_ts, device='cuda')
    msg = str(info.value)
    assert 'TensorRT' in msg and 'onnxruntime' in msg


def test_ensure_engines_uses_the_cache_and_names_the_command_that_builds(tiny_ts, tmp_path):
    info = eb.RuntimeInfo('10.3.0', 'Orin (sm_87)')
    with pytest.raises(BackendError, match=f'siam-model build-engine .* --cache {tmp_path}'):
        eb.ensure_engines(tiny_ts, 'fp16', info=info, cache_dir=tmp_path, allow_build=False)
    with pytest.raises(BackendError, match='--int8 --calib FRAMES_DIR'):
        eb.ensure_engines(tiny_ts, 'int8', info=info, cache_dir=tmp_path)
    # Engines put in the cache under the right keys are found without building.
    for role in tiny_ts.graph_roles:
        key = eb.engine_key(tiny_ts.path(role), info.trt_version, info.gpu_name, 'fp16')
        eb.cached_engine(tiny_ts.path(role), key, lambda p: eb.BuiltEngine(b'serialized', IO),
                         tmp_path, stem=eb.engine_stem(tiny_ts, role))
    found = eb.ensure_engines(tiny_ts, 'fp16', info=info, cache_dir=tmp_path,
                              allow_build=False)
    assert sorted(found) == ['search', 'template']
    assert not any(e.built for e in found.values())
    assert all(e.path.read_bytes() == b'serialized' and e.io == IO for e in found.values())
    # Another TensorRT version is another key: nothing cached for it.
    with pytest.raises(BackendError, match='no usable fp16 engine'):
        eb.ensure_engines(tiny_ts, 'fp16', info=eb.RuntimeInfo('10.7.0', 'Orin (sm_87)'),
                          cache_dir=tmp_path, allow_build=False)


# ------------------------------------------------------------------------------------------
# the stand-in itself

@pytest.fixture
def standin():
    with trt_standin.installed() as s:
        yield s


def test_standin_checks_types_bounds_and_shapes(standin, tiny_bh):
    """The stand-in refuses what TensorRT / cuda-python refuse (it is not a yes-machine)."""
    trt, rt = standin.trt, standin.cudart
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    assert config.get_flag(trt.BuilderFlag.TF32)  # on by default, as on Orin
    with pytest.raises(TypeError):
        config.set_flag(1)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with pytest.raises(TypeError):
        parser.parse(str(tiny_bh.path('backbone')))
    assert parser.parse(tiny_bh.path('backbone').read_bytes())
    assert builder.build_serialized_network(network, config) is None  # dynamic, no profile
    profile = builder.create_optimization_profile()
    profile.set_shape('input', (1, 3, 127, 127), (1, 3, 255, 255), (1, 3, 255, 255))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    runtime = trt.Runtime(logger)
    assert runtime.deserialize_cuda_engine(bytes(plan)[:-10]) is None
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    assert not context.set_input_shape('input', (1, 3, 300, 300))
    assert context.set_input_shape('input', (1, 3, 255, 255))
    err, ptr = rt.cudaMalloc(16)
    with pytest.raises(TypeError):
        context.set_tensor_address('input', float(ptr))
    context.set_tensor_address('input', ptr)  # far too small
    err, out = rt.cudaMalloc(4 * 4 * 31 * 31)
    context.set_tensor_address('output', out)
    assert not context.execute_async_v3(0)
    host = np.zeros(8, np.float32)
    err, = rt.cudaMemcpyAsync(ptr, host.ctypes.data, 32, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                              0)
    assert err == rt.cudaError_t.cudaErrorInvalidValue  # past the end of the 16 bytes
    with pytest.raises(TypeError):
        rt.cudaMemcpyAsync(ptr, host.ctypes.data, 16, 1, 0)


# ------------------------------------------------------------------------------------------
# the backend through the stand-ins

def _crops(seed=0, z=127, x=255):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (1, 3, z, z)).astype(np.float32),
            rng.uniform(0, 255, (1, 3, x, x)).astype(np.float32))


def _assert_matches_onnxruntime(backend, spec, tol=1e-5, seed=0):
    reference = OnnxRuntimeBackend(spec)
    z, x = _crops(seed)
    feats, ref_feats = backend.encode_template(z), reference.encode_template(z)
    assert [f.shape for f in feats] == [f.shape for f in ref_feats]
    got = backend.track(feats, x)
    want = reference.track(ref_feats, x)
    for name, g, w in zip(('cls', 'reg'), got, want):
        assert g.shape == w.shape, name
        assert np.abs(g - w).max() <= tol * np.abs(w).max(), name
    return got


def _backend(spec, cache, **options):
    return create_backend('tensorrt', spec, device='cuda', cache_dir=str(cache), **options)


@pytest.mark.parametrize('layout', ['template_search', 'backbone_head'])
def test_tensorrt_backend_matches_onnxruntime(standin, tiny_ts, tiny_bh, tmp_path, layout):
    spec = tiny_ts if layout == 'template_search' else tiny_bh
    backend = _backend(spec, tmp_path, precision='fp32')
    assert all(e.built for e in backend.engines.values())
    cls, _ = _assert_matches_onnxruntime(backend, spec)
    # Outputs are copies: a later call does not change an earlier result.
    kept = cls.copy()
    z, x = _crops(seed=5)
    backend.track(backend.encode_template(z), x)
    assert np.array_equal(cls, kept)
    backend.close()
    again = _backend(spec, tmp_path, precision='fp32')
    assert not any(e.built for e in again.engines.values())  # served from the cache
    _assert_matches_onnxruntime(again, spec)
    again.close()


@pytest.mark.parametrize('layout', ['template_search', 'backbone_head'])
def test_reordered_engine_io_still_gives_cls_and_reg(standin, tiny_ts, tiny_bh, tmp_path,
                                                     layout):
    """Bind by the recorded ONNX names: TensorRT documents no I/O order."""
    spec = tiny_ts if layout == 'template_search' else tiny_bh
    standin.controls.reverse_io = True
    backend = _backend(spec, tmp_path, precision='fp32')
    head = backend.engines[spec.graph_roles[1]]
    engine = standin.trt.Runtime(eb.trt_logger(standin.trt)).deserialize_cuda_engine(
        head.path.read_bytes())
    order = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert order == list(reversed(head.io.inputs + head.io.outputs))  # really reversed
    _assert_matches_onnxruntime(backend, spec)
    backend.close()


@pytest.fixture(scope='module')
def tiny_fused(tmp_path_factory):
    return models.fused(tmp_path_factory.mktemp('tiny') / 'fused', memory=2)


def _memory(backend, seed):
    return [backend.encode_template(z) for z in _crops(seed)[:1] + _crops(seed + 1)[:1]]


def test_fusion_engine_matches_onnxruntime(standin, tiny_fused, tiny_ts, tmp_path):
    """A model with a template-fusion graph gets a third engine, bound by its ONNX names."""
    standin.controls.reverse_io = True
    backend = _backend(tiny_fused, tmp_path, precision='fp32')
    assert sorted(backend.engines) == ['fusion', 'search', 'template']
    assert backend.has_fusion and all(e.built for e in backend.engines.values())
    reference = OnnxRuntimeBackend(tiny_fused)
    initial = backend.encode_template(_crops(7)[0])
    memory = _memory(backend, 8)
    got, = backend.fuse_templates(initial, memory)
    want, = reference.fuse_templates(initial, memory)
    assert got.shape == want.shape == (1, 4, 7, 7)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    swapped, = backend.fuse_templates(initial, memory[::-1])  # the slot order counts
    assert np.abs(swapped - got).max() > 1e-3 * np.abs(got).max()
    with pytest.raises(BackendError, match='memory slots'):
        backend.fuse_templates(initial, memory[:1])
    _assert_matches_onnxruntime(backend, tiny_fused)
    backend.close()
    again = _backend(tiny_fused, tmp_path, precision='fp32')
    assert not any(e.built for e in again.engines.values())  # all three from the cache
    again.close()
    plain = _backend(tiny_ts, tmp_path, precision='fp32')
    assert not plain.has_fusion and sorted(plain.engines) == ['search', 'template']
    with pytest.raises(BackendError, match='no template-fusion graph'):
        plain.fuse_templates(initial, memory)
    plain.close()


def test_fusion_engine_of_an_int8_model_is_fp16(standin, tiny_fused, tmp_path, capsys):
    """The fusion graph is never calibrated: build-engine --int8 builds it as FP16."""
    cache = tmp_path / 'cache'
    assert _build(tiny_fused.root, '--int8', '--calib', _frames(tmp_path / 'f', 3),
                  '--calib-count', 2, '--cache', cache) == mt.EXIT_OK
    out = capsys.readouterr().out
    assert '  fusion: ' in out
    built = {eb.read_sidecar(p).key.precision: p.name for p in cache.glob('*.engine')}
    assert sorted(built) == ['fp16', 'int8'] and 'fusion-fp16' in built['fp16']
    assert len(list(cache.glob('*.engine'))) == 3
    backend = _backend(tiny_fused, cache, precision='int8', build=False)
    assert backend.has_fusion and backend.engines['fusion'].key.precision == 'fp16'
    backend.close()


def test_truncated_engine_is_rebuilt(standin, tiny_ts, tmp_path):
    _backend(tiny_ts, tmp_path).close()
    search = next(tmp_path.glob('*search-fp16-*.engine'))
    data = search.read_bytes()
    search.write_bytes(data[:len(data) // 3])  # power lost while writing
    backend = _backend(tiny_ts, tmp_path)
    assert backend.engines['search'].built and not backend.engines['template'].built
    assert search.read_bytes() == data
    _assert_matches_onnxruntime(backend, tiny_ts, tol=3e-2)
    backend.close()


def test_engine_tensorrt_cannot_load_is_rebuilt_or_refused(standin, tiny_ts, tmp_path):
    """A plan that matches its record but fails to deserialize (TensorRT returns None)."""
    _backend(tiny_ts, tmp_path).close()
    engine = next(tmp_path.glob('*template-fp16-*.engine'))
    record = json.loads(engine.with_suffix('.json').read_text())
    damaged = b'not a plan' + engine.read_bytes()[10:]
    engine.write_bytes(damaged)
    record['engine_sha256'] = __import__('hashlib').sha256(damaged).hexdigest()
    engine.with_suffix('.json').write_text(json.dumps(record))
    with pytest.raises(BackendError, match='cannot load .*siam-model build-engine .*--force'):
        _backend(tiny_ts, tmp_path, build=False)
    backend = _backend(tiny_ts, tmp_path)
    assert backend.engines['template'].built
    _assert_matches_onnxruntime(backend, tiny_ts, tol=3e-2)
    backend.close()


def test_fp32_builds_clear_tf32(standin, tiny_ts, tmp_path):
    _backend(tiny_ts, tmp_path / 'a', precision='fp32').close()
    _backend(tiny_ts, tmp_path / 'b', precision='fp16').close()
    flags = [set(b['flags']) for b in standin.controls.builds]
    assert len(flags) == 4
    assert all('TF32' not in f and 'FP16' not in f for f in flags[:2]), flags
    assert all('FP16' in f for f in flags[2:]), flags


def test_rejected_input_shape_raises_a_clear_error(standin, tiny_bh, tmp_path):
    backend = _backend(tiny_bh, tmp_path)
    small, _ = _crops(z=100)  # below the profile's minimum (the exemplar size)
    with pytest.raises(BackendError, match=r'rejected shape \(1, 3, 100, 100\).*127, 127'):
        backend.encode_template(small)
    backend.close()


def test_close_frees_buffers_and_stream(standin, tiny_bh, tmp_path):
    before = standin.gpu.live()
    backend = _backend(tiny_bh, tmp_path)
    during = standin.gpu.live()
    assert during['device'] > before['device'] and during['streams'] == before['streams'] + 1
    backend.close()
    assert standin.gpu.live() == before
    backend.close()  # idempotent
    with pytest.raises(BackendError, match='closed'):
        backend.encode_template(_crops()[0])


def test_one_tensorrt_logger_for_every_builder_and_runtime(standin, tiny_ts, tmp_path):
    _backend(tiny_ts, tmp_path / 'a').close()
    _backend(tiny_ts, tmp_path / 'a').close()
    _backend(tiny_ts, tmp_path / 'b', precision='fp32').close()
    assert len(standin.controls.builds) == 4
    assert not [m for m in standin.controls.messages if 'logger' in m[1]]


def test_node_backend_options_reach_the_backend(standin, tiny_ts, tmp_path):
    """Pass what the node passes: precision and cache_dir, to backends that take them."""
    from siam_tracker_ros.factory import load_tracker
    options = {'precision': 'fp32', 'cache_dir': str(tmp_path / 'engines')}
    tracker = load_tracker(tiny_ts, backend='tensorrt', device='cuda', backend_options=options)
    assert tracker.backend.name == 'tensorrt' and tracker.backend.precision == 'fp32'
    assert all(e.path.parent == tmp_path / 'engines' for e in tracker.backend.engines.values())
    tracker.backend.close()
    tracker = load_tracker(tiny_ts, backend='onnxruntime', device='cpu',
                           backend_options=options)
    assert tracker.backend.name == 'onnxruntime'
    with pytest.raises(BackendError, match=r'no usable int8 engine.*--int8 --calib'):
        load_tracker(tiny_ts, backend='tensorrt', device='cuda',
                     backend_options=dict(options, precision='int8'))


# ------------------------------------------------------------------------------------------
# 'auto'

def test_auto_falls_back_to_onnxruntime_when_tensorrt_has_no_cuda_bindings(tiny_ts, tmp_path,
                                                                           caplog):
    with trt_standin.installed(cuda=False):
        import tensorrt  # noqa: F401 - it imports: only the CUDA bindings are missing
        choice = choose_backend('auto', 'cuda')
        assert choice.name == 'onnxruntime' and choice.device == 'cpu'
        assert 'cuda-python' in choice.reason and 'pycuda' in choice.reason
        with caplog.at_level(logging.INFO, logger='siam_tracker_ros.backends.registry'):
            backend = create_backend('auto', tiny_ts, device='cuda', precision='fp16',
                                     cache_dir=str(tmp_path))
        assert backend.name == 'onnxruntime' and backend.device == 'cpu'
        assert 'onnxruntime' in caplog.text and 'cuda-python' in caplog.text
        backend = create_backend('auto', tiny_ts, device='cuda', precision='int8', build=True)
        assert backend.name == 'onnxruntime' and backend.precision == 'fp32'
    with trt_standin.installed():
        assert choose_backend('auto', 'cuda').name == 'tensorrt'
        assert choose_backend('auto', 'cuda:1').name == 'onnxruntime'  # no such device
    assert choose_backend('auto', 'cpu').name == 'onnxruntime'


# ------------------------------------------------------------------------------------------
# siam-model build-engine / check-backend

def _frames(folder, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(3):
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        cv2.imwrite(str(folder / f'{i:04d}.png'), cv2.resize(coarse, (160, 120)))
    return folder


def _build(*args):
    return siam_model.main(['build-engine', *map(str, args)])


def test_int8_calibration_table_follows_the_frames_and_force(
        standin, tiny_ts, tmp_path, capsys):
    cache = tmp_path / 'cache'
    frames_a, frames_b = _frames(tmp_path / 'a', 1), _frames(tmp_path / 'b', 2)
    builds = standin.controls.builds

    def build(frames, *extra):
        builds.clear()
        assert _build(tiny_ts.root, '--int8', '--calib', frames, '--calib-count', 2, '--cache',
                      cache, *extra) == mt.EXIT_OK, capsys.readouterr().err
        return [b['calibrated'] for b in builds]

    def drop_engines():
        for p in cache.glob('*.engine'):
            p.unlink()

    assert build(frames_a) == [True, True]
    assert all(b['calibration_batches'] == 2 for b in builds)
    assert 'calibrated on 2 crop batches' in capsys.readouterr().out
    drop_engines()
    assert build(frames_a) == [False, False]  # same frames: the cached table
    assert 'calibration table reused' in capsys.readouterr().out
    drop_engines()
    assert build(frames_b) == [True, True]  # other frames: recalibrated
    assert build(frames_b, '--force') == [True, True]  # --force ignores the table
    assert build(frames_b) == []  # engines cached: nothing built
    assert len(list(cache.glob('*.calib'))) == 2  # one table per graph, the latest frames
    assert standin.gpu.live()['device'] == 0  # the calibrator's buffers are freed


def test_calibration_crops_are_normalised_like_the_backend(standin, tmp_path):
    mean, std = (100.0, 110.0, 120.0), (50.0, 60.0, 70.0)
    spec = models.template_search(tmp_path / 'norm', seed=3, mean=mean, std=std)
    frames = _frames(tmp_path / 'frames', 4)
    batches = mt.calibration_batches(spec, str(frames), count=2)
    pairs, _ = mt.crop_pairs(spec, str(frames), 2)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    reference = OnnxRuntimeBackend(spec)
    for pair, t_feed, s_feed in zip(pairs, batches['template'], batches['search']):
        np.testing.assert_allclose(t_feed['template'], (pair.template - m) / s, rtol=1e-6)
        np.testing.assert_allclose(s_feed['search'], (pair.search - m) / s, rtol=1e-6)
        zf0, zf1 = reference.encode_template(pair.template)  # normalises itself
        np.testing.assert_allclose(s_feed['zf0'], zf0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s_feed['zf1'], zf1, rtol=1e-5, atol=1e-6)
    # The calibrator feeds TensorRT the normalised crops (pixels would reach 255).
    assert _build(spec.root, '--int8', '--calib', frames, '--calib-count', 2, '--cache',
                  tmp_path / 'cache') == mt.EXIT_OK
    template_build = standin.controls.builds[0]
    assert 0 < template_build['calibration_amax']['template'] < 5


def _check(*args):
    return siam_model.main(['check-backend', '--backend', 'tensorrt', *map(str, args)])


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_check_backend_passes_on_the_standin(standin, tiny_ts, tmp_path, capsys, precision):
    rc = _check(tiny_ts.root, '--precision', precision, '--cache', tmp_path, '--count', 2)
    out = capsys.readouterr().out
    assert rc == mt.EXIT_OK, out
    assert 'PASS' in out and standin.gpu.live()['device'] == 0  # closed after the check


def test_check_backend_exits_1_with_the_reason_on_a_run_time_error(
        standin, tiny_ts, tmp_path, capsys):
    standin.controls.fail_execute = True
    rc = _check(tiny_ts.root, '--cache', tmp_path, '--count', 2)
    err = capsys.readouterr().err
    assert rc == mt.EXIT_FAILED
    assert 'TensorRT execution failed' in err and 'Traceback' not in err


def test_check_backend_missing_int8_engine_exits_1_not_3(standin, tiny_ts, tmp_path, capsys):
    rc = _check(tiny_ts.root, '--precision', 'int8', '--cache', tmp_path, '--count', 2)
    err = capsys.readouterr().err
    assert rc == mt.EXIT_FAILED, err
    assert 'not possible here' not in err
    assert f'siam-model build-engine {tiny_ts.root} --int8 --calib FRAMES_DIR' in err


def test_check_backend_exits_3_without_cuda_bindings(tiny_ts, tmp_path, capsys):
    with trt_standin.installed(cuda=False):
        rc = _check(tiny_ts.root, '--cache', tmp_path, '--count', 2)
    err = capsys.readouterr().err
    assert rc == mt.EXIT_UNAVAILABLE and 'not possible here' in err and 'pycuda' in err


def test_build_engine_exports_tensorrt_safe_graphs_for_upstream_nanotrack_v3(
        standin, tmp_path, capsys):
    """Upstream v3's head has Conv nodes with run-time weights: TensorRT cannot build it."""
    pytest.importorskip('torch', reason='the split export of the checkpoint needs PyTorch')
    upstream = need(MODELS / 'nanotrack-v3')
    imported = tmp_path / 'nanotrack-v3'
    assert siam_model.main(['import', 'nanotrack', str(upstream), '--out',
                            str(imported)]) == 0
    from siam_tracker_ros.core.manifest import load_manifest
    spec = load_manifest(imported)
    with pytest.raises(eb.EngineBuildError, match='Conv'):  # the stand-in parser refuses it
        eb.build_engine(spec.path('head'))
    cache = tmp_path / 'cache'
    capsys.readouterr()
    assert _build(imported, '--fp32', '--cache', cache) == mt.EXIT_OK
    out = capsys.readouterr().out
    assert 'run-time weights' in out and str(cache / 'models') in out
    assert '  template: ' in out and '  search: ' in out
    # The backend uses the same export, and its outputs are the upstream model's.
    backend = _backend(spec, cache, precision='fp32')
    assert not any(e.built for e in backend.engines.values())
    _assert_matches_onnxruntime(backend, spec, tol=1e-3)
    backend.close()


# ------------------------------------------------------------------------------------------
# the real engine (TensorRT 10 + GPU only)

@pytest.fixture(scope='module')
def trt_ready():
    reason = _tensorrt_skip_reason()
    if reason:
        pytest.skip(f'needs TensorRT 10 and an NVIDIA GPU: {reason}')


@pytest.fixture(scope='module')
def alex_model(tmp_path_factory):
    pytest.importorskip('torch', reason='the random SiamRPN model is built with PyTorch')
    from siam_tracker_ros.nets.pysot_import import random_model
    spec, _ = random_model('siamrpn_alex', tmp_path_factory.mktemp('alex') / 'model', seed=4)
    return spec


@pytest.mark.parametrize('precision,tolerance', [('fp32', 1e-3), ('fp16', 3e-2)])
def test_tensorrt_matches_onnxruntime_on_a_gpu(trt_ready, alex_model, tmp_path, precision,
                                               tolerance):
    from siam_tracker_ros.cli.model_tools import compare_backends, crop_pairs
    backend = _backend(alex_model, tmp_path, precision=precision)
    assert all(e.built for e in backend.engines.values())
    pairs, _ = crop_pairs(alex_model, None, 4)
    report = compare_backends(alex_model, backend, OnnxRuntimeBackend(alex_model), pairs,
                              tolerance)
    assert report['passed'], report['outputs']
    backend.close()
    again = _backend(alex_model, tmp_path, precision=precision)
    assert not any(e.built for e in again.engines.values())  # served from the cache
    again.close()


# ------------------------------------------------------------------------------------------
# a temporal (TAFA) search graph through the stand-ins

@pytest.fixture(scope='module')
def tiny_temporal(tmp_path_factory):
    return models.template_search_temporal(tmp_path_factory.mktemp('tiny') / 'tt')


@pytest.mark.parametrize('reverse', [False, True])
def test_tensorrt_backend_runs_a_temporal_search_graph_like_onnxruntime(
        standin, tiny_temporal, tmp_path, reverse):
    """search, zf, xf_prev1, xf_prev2 -> cls, reg, xf, bound by name whatever the I/O order."""
    standin.controls.reverse_io = reverse
    backend = _backend(tiny_temporal, tmp_path, precision='fp32')
    reference = OnnxRuntimeBackend(tiny_temporal)
    assert backend.temporal == reference.temporal == 2
    z, x = _crops(0)
    feats, ref_feats = backend.encode_template(z), reference.encode_template(z)
    earlier = [reference.track_temporal(ref_feats, _crops(s)[1], ())[2] for s in (1, 2)]
    results = []
    for previous in ((), earlier[:1], earlier):
        got = backend.track_temporal(feats, x, previous)
        want = reference.track_temporal(ref_feats, x, previous)
        for name, g, w in zip(('cls', 'reg', 'xf'), got, want):
            assert g.shape == w.shape, name
            assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max(), (name, len(previous))
        results.append(got)
    # Each neighbour changes the result; xf is the crop's own whatever came before.
    assert np.abs(results[0][0] - results[1][0]).max() > 1e-4
    assert np.abs(results[1][0] - results[2][0]).max() > 1e-4
    assert np.array_equal(results[0][2], results[2][2])
    # The plain track is the run with no earlier frame; outputs are copies.
    cls, _ = backend.track(feats, x)
    np.testing.assert_allclose(cls, results[0][0], rtol=0, atol=1e-6)
    kept = cls.copy()
    backend.track_temporal(feats, _crops(5)[1], earlier)
    assert np.array_equal(cls, kept)
    backend.close()


def test_tensorrt_backend_refuses_track_temporal_on_a_plain_model(standin, tiny_ts, tmp_path):
    backend = _backend(tiny_ts, tmp_path, precision='fp32')
    assert backend.temporal == 0
    z, x = _crops()
    with pytest.raises(BackendError, match='no temporal search graph'):
        backend.track_temporal(backend.encode_template(z), x, ())
    backend.close()


def test_temporal_graph_calibrates_with_the_crops_own_features(standin, tiny_temporal,
                                                               tmp_path):
    frames = _frames(tmp_path / 'frames', 6)
    batches = mt.calibration_batches(tiny_temporal, str(frames), count=2)
    reference = OnnxRuntimeBackend(tiny_temporal)
    pairs, _ = mt.crop_pairs(tiny_temporal, str(frames), 2)
    for pair, feed in zip(pairs, batches['search']):
        assert sorted(feed) == ['search', 'xf_prev1', 'xf_prev2', 'zf']
        _, _, xf = reference.track_temporal(reference.encode_template(pair.template),
                                            pair.search, ())
        np.testing.assert_allclose(feed['xf_prev1'], xf, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feed['xf_prev2'], xf, rtol=1e-5, atol=1e-6)
    assert _build(tiny_temporal.root, '--int8', '--calib', frames, '--calib-count', 2,
                  '--cache', tmp_path / 'cache') == mt.EXIT_OK


def test_check_backend_passes_on_a_temporal_model(standin, tiny_temporal, tmp_path, capsys):
    rc = _check(tiny_temporal.root, '--precision', 'fp32', '--cache', tmp_path, '--count', 2)
    out = capsys.readouterr().out
    assert rc == mt.EXIT_OK, out
    assert 'PASS' in out and standin.gpu.live()['device'] == 0
