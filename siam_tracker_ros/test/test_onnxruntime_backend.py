"""
ONNX Runtime backend: the execution providers and options it asks for, and a real CPU run.

The GPU providers cannot run here (CPU onnxruntime); what the backend asks of them is a pure
function of (device, precision, available providers, cache folder), checked against the
option names of ONNX Runtime's TensorRT and CUDA providers (device_id, trt_fp16_enable,
trt_engine_cache_enable, trt_engine_cache_path; present since ORT 1.9, read by 1.17's Python
binding). The sessions are real: a two-graph model made here, run on the CPU provider.
"""
import logging

import numpy as np
import pytest

from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.backends.onnxruntime_backend import (choose_providers, OnnxRuntimeBackend,
                                                           ort_trt_cache_dir, provider_warnings)
from siam_tracker_ros.core.manifest import ModelSpec

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

TRT, CUDA, CPU = 'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'
GPU_BUILD = [TRT, CUDA, CPU]


def _save(graph, path):
    from onnx import helper
    # IR 8 / opset 13: what onnxruntime 1.17 (the oldest supported) loads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def tiny_model(root, scale: float = 0.5) -> ModelSpec:
    """Write a two-graph model: z -> scale * z; (zf, x) -> (mean x + mean zf, mean x - mean zf)."""
    from onnx import helper, TensorProto
    root.mkdir(parents=True, exist_ok=True)

    def tensor(name, side):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, side, side])

    scale_init = helper.make_tensor('scale', TensorProto.FLOAT, [], [scale])
    _save(helper.make_graph([helper.make_node('Mul', ['template', 'scale'], ['zf'])],
                            'template', [tensor('template', 127)], [tensor('zf', 127)],
                            [scale_init]), root / 'template.onnx')
    nodes = [helper.make_node('GlobalAveragePool', ['search'], ['xm']),
             helper.make_node('GlobalAveragePool', ['zf'], ['zm']),
             helper.make_node('Add', ['xm', 'zm'], ['cls']),
             helper.make_node('Sub', ['xm', 'zm'], ['reg'])]
    _save(helper.make_graph(nodes, 'search', [tensor('zf', 127), tensor('search', 255)],
                            [tensor('cls', 1), tensor('reg', 1)]), root / 'search.onnx')
    return ModelSpec(root=root, name='tiny v1', family='siamrpn', decoder='anchor',
                     layout='template_search', stride=8,
                     files={'template': 'template.onnx', 'search': 'search.onnx'})


def test_cpu_device_asks_for_the_cpu_provider_only():
    assert choose_providers('cpu', GPU_BUILD) == [(CPU, {})]


def test_gpu_device_gives_tensorrt_and_cuda_the_device_id_and_the_engine_cache(tmp_path):
    cache = tmp_path / 'engines' / 'ort-trt' / 'm'
    assert choose_providers('cuda:1', GPU_BUILD, 'fp16', cache) == [
        (TRT, {'device_id': 1, 'trt_fp16_enable': True, 'trt_engine_cache_enable': True,
               'trt_engine_cache_path': str(cache)}),
        (CUDA, {'device_id': 1}),
        (CPU, {})]
    assert choose_providers('gpu', GPU_BUILD, 'fp32', cache)[0] == (
        TRT, {'device_id': 0, 'trt_fp16_enable': False, 'trt_engine_cache_enable': True,
              'trt_engine_cache_path': str(cache)})


def test_a_cuda_only_build_gets_the_cuda_provider_with_its_device():
    assert choose_providers('cuda:2', [CUDA, CPU], 'fp16') == [(CUDA, {'device_id': 2}),
                                                               (CPU, {})]


def test_bad_devices_and_precisions_are_clear_errors():
    with pytest.raises(BackendError, match='no GPU execution provider'):
        choose_providers('cuda', [CPU])
    with pytest.raises(BackendError, match='cuda:N'):
        choose_providers('cuda:x', GPU_BUILD)
    with pytest.raises(BackendError, match='unknown device'):
        choose_providers('tpu:0', GPU_BUILD)
    with pytest.raises(BackendError, match='tensorrt backend'):
        choose_providers('cuda', GPU_BUILD, 'int8')
    with pytest.raises(BackendError, match='unknown precision'):
        choose_providers('cpu', GPU_BUILD, 'fp8')


def test_engine_cache_sits_beside_the_tensorrt_backends_and_follows_the_weights(
        tmp_path, monkeypatch):
    monkeypatch.setenv('SIAM_ENGINE_CACHE', str(tmp_path / 'engines'))
    a = tiny_model(tmp_path / 'a')
    same = tiny_model(tmp_path / 'same')
    other_weights = tiny_model(tmp_path / 'b', scale=0.25)
    folder = ort_trt_cache_dir(a, 'fp16')
    assert folder.parent == tmp_path / 'engines' / 'ort-trt'
    assert folder.name.startswith('tiny_v1-') and folder.name.endswith('-fp16')
    assert ort_trt_cache_dir(same, 'fp16') == folder
    # same graph and file names, other weights: ONNX Runtime would reuse the engine
    assert ort_trt_cache_dir(other_weights, 'fp16') != folder
    assert ort_trt_cache_dir(a, 'fp32') != folder
    assert ort_trt_cache_dir(a, 'fp16', tmp_path / 'mine').parent == tmp_path / 'mine' / 'ort-trt'


def test_cpu_backend_runs_real_sessions_and_logs_its_provider(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv('SIAM_ENGINE_CACHE', str(tmp_path / 'engines'))
    spec = tiny_model(tmp_path / 'm')
    with caplog.at_level(logging.INFO, logger='siam_tracker_ros.backends.onnxruntime_backend'):
        backend = OnnxRuntimeBackend(spec, device='cpu', threads=1)
    assert backend.providers == [(CPU, {})]
    assert backend.active_providers == [CPU] and backend.provider == CPU
    assert 'onnxruntime runs tiny v1 on CPUExecutionProvider' in caplog.text
    features = backend.encode_template(np.full((1, 3, 127, 127), 4.0, np.float32))
    assert len(features) == 1
    np.testing.assert_array_equal(features[0], np.full((1, 3, 127, 127), 2.0))
    cls, reg = backend.track(features, np.full((1, 3, 255, 255), 10.0, np.float32))
    np.testing.assert_allclose(cls, np.full((1, 3, 1, 1), 12.0), rtol=1e-6)
    np.testing.assert_allclose(reg, np.full((1, 3, 1, 1), 8.0), rtol=1e-6)
    assert not (tmp_path / 'engines').exists()  # no TensorRT provider, no engine folder


def test_a_provider_that_did_not_start_and_fp16_without_tensorrt_are_said():
    assert provider_warnings(TRT, TRT, 'cuda:0', 'fp16') == []
    assert provider_warnings(CPU, CPU, 'cpu', 'fp16') == []  # the node's default precision
    missing_libs = provider_warnings(TRT, CUDA, 'cuda:1', 'fp16')
    assert len(missing_libs) == 2
    assert 'could not start TensorrtExecutionProvider for device cuda:1' in missing_libs[0]
    assert 'CUDAExecutionProvider runs fp32' in missing_libs[1]
    assert provider_warnings(CUDA, CUDA, 'cuda', 'fp16') == [
        'precision fp16 applies to the TensorRT execution provider only; '
        'CUDAExecutionProvider runs fp32']


def test_precision_is_checked_and_kept(tmp_path):
    spec = tiny_model(tmp_path / 'm')
    assert OnnxRuntimeBackend(spec, device='cpu', precision='fp16').precision == 'fp16'
    with pytest.raises(BackendError, match='tensorrt backend'):
        OnnxRuntimeBackend(spec, precision='int8')


def test_gpu_device_on_a_cpu_build_is_a_clear_error(tmp_path):
    if set(ort.get_available_providers()) & {TRT, CUDA}:
        pytest.skip('this onnxruntime build has a GPU provider')
    with pytest.raises(BackendError, match='install onnxruntime-gpu'):
        OnnxRuntimeBackend(tiny_model(tmp_path / 'm'), device='cuda:0')
