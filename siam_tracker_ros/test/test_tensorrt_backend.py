"""TensorRT backend: engine cache key and cache policy, profiles, and the real thing on a GPU.

The key, cache and profile logic are plain functions and run everywhere. Building and running
engines needs TensorRT 10 and an NVIDIA GPU: those tests skip with the reason elsewhere, and
a test checks the clear error the backend gives where TensorRT is missing.
"""
import json

import numpy as np
import onnx
import pytest

from shared_data import MODELS, need
from siam_tracker_ros.backends import engine_build as eb
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.backends.registry import create_backend
from siam_tracker_ros.backends.tensorrt_backend import parse_device

SHA = 'ab' * 32


def _key(**changes):
    fields = dict(onnx_sha256=SHA, trt_version='10.3.0', gpu_name='Orin (sm_87)',
                  precision='fp16')
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

class _Builder:
    """Stands in for TensorRT's builder: serialises the key it was asked for."""

    def __init__(self):
        self.calls = 0

    def __call__(self, key):
        def build(onnx_path):
            self.calls += 1
            return f'engine of {onnx_path.name} for {key.digest}'.encode()
        return build


def test_cache_builds_once_then_reuses(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    cache = tmp_path / 'cache'
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin (sm_87)', 'fp16')
    builder = _Builder()
    path, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')
    assert built and builder.calls == 1
    assert path.read_bytes() == f'engine of search.onnx for {key.digest}'.encode()
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['onnx_sha256'] == key.onnx_sha256 and sidecar['precision'] == 'fp16'
    again, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')
    assert (again, built, builder.calls) == (path, False, 1)
    forced, built = eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search',
                                     force=True)
    assert forced == path and built and builder.calls == 2


def test_cache_rebuilds_when_any_key_field_changes(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph v1')
    cache = tmp_path / 'cache'
    builder = _Builder()

    def get(version='10.3.0', gpu='Orin (sm_87)', precision='fp16'):
        key = eb.engine_key(onnx_path, version, gpu, precision)
        return eb.cached_engine(onnx_path, key, builder(key), cache, stem='m-search')

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
    path, _ = eb.cached_engine(onnx_path, key, builder(key), cache)
    path.with_suffix('.json').write_text('{"precision": "fp16"}')  # truncated record
    assert eb.lookup_engine(cache, 'template', key) is None
    _, built = eb.cached_engine(onnx_path, key, builder(key), cache)
    assert built and eb.lookup_engine(cache, 'template', key) == path


def test_cache_refuses_an_empty_build(tmp_path):
    onnx_path = tmp_path / 'search.onnx'
    onnx_path.write_bytes(b'graph')
    key = eb.engine_key(onnx_path, '10.3.0', 'Orin', 'fp16')
    with pytest.raises(eb.EngineBuildError, match='no data'):
        eb.cached_engine(onnx_path, key, lambda p: b'', tmp_path / 'cache')
    assert not list(tmp_path.glob('cache/*.engine'))


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
        shapes = eb.profile_shapes(inputs, spec.tracker.exemplar_size,
                                   spec.tracker.instance_size)
        assert bool(shapes) == expect_profile, role


# ------------------------------------------------------------------------------------------
# devices and the missing-runtime message

def test_parse_device():
    assert parse_device('cuda') == 0
    assert parse_device('cuda:1') == 1
    assert parse_device('gpu') == 0
    for bad in ('cpu', 'cuda:x', 'npu:0'):
        with pytest.raises(BackendError):
            parse_device(bad)


@pytest.fixture(scope='module')
def alex_model(tmp_path_factory):
    from siam_tracker_ros.nets.pysot_import import random_model
    spec, _ = random_model('siamrpn_alex', tmp_path_factory.mktemp('alex') / 'model', seed=4)
    return spec


def test_backend_says_clearly_when_tensorrt_cannot_run(alex_model):
    reason = _tensorrt_skip_reason()
    if not reason:
        pytest.skip('TensorRT and a GPU are present here; the missing-runtime path is moot')
    with pytest.raises(BackendError) as info:
        create_backend('tensorrt', alex_model, device='cuda')
    msg = str(info.value)
    assert 'TensorRT' in msg or 'CUDA' in msg or 'cuda' in msg
    assert 'onnxruntime' in msg or 'install' in msg


def test_ensure_engines_uses_the_cache_and_names_the_command_that_builds(alex_model, tmp_path):
    info = eb.RuntimeInfo('10.3.0', 'Orin (sm_87)')
    with pytest.raises(BackendError, match='siam-model build-engine'):
        eb.ensure_engines(alex_model, 'fp16', info=info, cache_dir=tmp_path, allow_build=False)
    with pytest.raises(BackendError, match='--calib'):
        eb.ensure_engines(alex_model, 'int8', info=info, cache_dir=tmp_path)
    # Engines put in the cache under the right keys are found without building.
    for role in alex_model.graph_roles:
        key = eb.engine_key(alex_model.path(role), info.trt_version, info.gpu_name, 'fp16')
        eb.cached_engine(alex_model.path(role), key, lambda p: b'serialized', tmp_path,
                         stem=f'{alex_model.name}-{role}')
    found = eb.ensure_engines(alex_model, 'fp16', info=info, cache_dir=tmp_path,
                              allow_build=False)
    assert sorted(found) == ['search', 'template']
    assert not any(e.built for e in found.values())
    assert all(e.path.read_bytes() == b'serialized' for e in found.values())
    # Another TensorRT version is another key: nothing cached for it.
    with pytest.raises(BackendError, match='no fp16 engine'):
        eb.ensure_engines(alex_model, 'fp16', info=eb.RuntimeInfo('10.7.0', 'Orin (sm_87)'),
                          cache_dir=tmp_path, allow_build=False)


# ------------------------------------------------------------------------------------------
# the real engine (TensorRT 10 + GPU only)

@pytest.fixture(scope='module')
def trt_ready():
    reason = _tensorrt_skip_reason()
    if reason:
        pytest.skip(f'needs TensorRT 10 and an NVIDIA GPU: {reason}')


@pytest.mark.parametrize('precision,tolerance', [('fp32', 1e-3), ('fp16', 3e-2)])
def test_tensorrt_matches_onnxruntime(trt_ready, alex_model, tmp_path, precision, tolerance):
    from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from siam_tracker_ros.cli.model_tools import compare_backends, crop_pairs
    backend = create_backend('tensorrt', alex_model, device='cuda', precision=precision,
                             cache_dir=tmp_path)
    assert all(e.built for e in backend.engines.values())
    pairs, _ = crop_pairs(alex_model, None, 4)
    report = compare_backends(alex_model, backend, OnnxRuntimeBackend(alex_model), pairs,
                              tolerance)
    assert report['passed'], report['outputs']
    # Outputs are copies: a later call does not change an earlier result.
    feats = backend.encode_template(pairs[0].template)
    cls, _ = backend.track(feats, pairs[0].search)
    kept = cls.copy()
    backend.track(backend.encode_template(pairs[1].template), pairs[1].search)
    assert np.array_equal(cls, kept)
    again = create_backend('tensorrt', alex_model, device='cuda', precision=precision,
                           cache_dir=tmp_path)
    assert not any(e.built for e in again.engines.values())  # served from the cache
