"""
The PyTorch backend: interface, errors, normalisation, and parity with ONNX Runtime.

Needs ../shared/reference-models (override with SIAM_SHARED); skipped with the reason if absent.
Parity tolerances, relative to the largest reference value: template features 2e-4, cls/reg
1e-3 (measured <= 2e-4 against the upstream ONNX pair; reg passes through exp()).
"""
import dataclasses

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import bag_crops, MODELS
from siam_tracker_ros.backends.base import Backend, BackendError
from siam_tracker_ros.backends.registry import create_backend
from siam_tracker_ros.backends.torch_backend import TorchBackend
from siam_tracker_ros.core.manifest import load_manifest, ModelSpec
from siam_tracker_ros.nets.export import nanotrack_tracker_config
from siam_tracker_ros.nets.nanotrack_import import make_backbone_dynamic
import torch

ort = pytest.importorskip('onnxruntime')

REFS = MODELS
FEATURE_TOL = 2e-4
OUTPUT_TOL = 1e-3


def _close(got, ref, what, tol):
    assert got.shape == ref.shape, f'{what}: shape {got.shape} != {ref.shape}'
    err, peak = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    assert peak > 0
    assert err <= tol * peak, f'{what}: max error {err:.3g} > {tol} * peak {peak:.3g}'


def _upstream_spec(version: int) -> ModelSpec:
    """Build a spec over the upstream checkpoint itself (only the torch backend's needs)."""
    folder = REFS / f'nanotrack-v{version}'
    if not (folder / f'nanotrackv{version}.pth').is_file():
        pytest.skip(f'{folder}/nanotrackv{version}.pth is absent (needs ../shared)')
    return ModelSpec(root=folder, name=f'upstream_v{version}', family='nanotrack',
                     decoder='anchor_free', layout='template_search', stride=16,
                     files={'checkpoint': f'nanotrackv{version}.pth'},
                     arch=f'nanotrack_v{version}',
                     tracker=nanotrack_tracker_config(version))


@pytest.fixture(scope='module')
def crops():
    return bag_crops()


def _upstream_pair(version, tmp_path):
    folder = REFS / f'nanotrack-v{version}'
    backbone = sorted(folder.glob('nanotrack_backbone*.onnx'))[0]
    head = sorted(folder.glob('nanotrack_head*.onnx'))[0]
    dyn = tmp_path / 'backbone.onnx'
    make_backbone_dynamic(backbone, dyn)
    providers = ['CPUExecutionProvider']
    return (ort.InferenceSession(str(dyn), providers=providers),
            ort.InferenceSession(str(head), providers=providers))


@pytest.mark.parametrize('version', (1, 2, 3))
def test_matches_upstream_onnx(version, crops, tmp_path):
    backend = TorchBackend(_upstream_spec(version))
    assert isinstance(backend, Backend)
    assert backend.name == 'torch' and backend.device == 'cpu'
    z, x = crops
    features = backend.encode_template(z)
    assert isinstance(features, tuple) and len(features) == 1
    channels = 96 if version == 3 else 48
    assert features[0].shape == (1, channels, 8, 8) and features[0].dtype == np.float32
    cls, reg = backend.track(features, x)
    size = 15 if version == 3 else 16
    assert cls.shape == (1, 2, size, size) and reg.shape == (1, 4, size, size)
    assert cls.dtype == np.float32 and reg.dtype == np.float32

    backbone, head = _upstream_pair(version, tmp_path)
    zf_ref = backbone.run(None, {'input': z})[0]
    xf_ref = backbone.run(None, {'input': x})[0]
    cls_ref, reg_ref = head.run(['output1', 'output2'], {'input1': zf_ref, 'input2': xf_ref})
    _close(features[0], zf_ref, 'zf', FEATURE_TOL)
    _close(cls, cls_ref, 'cls', OUTPUT_TOL)
    _close(reg, reg_ref, 'reg', OUTPUT_TOL)
    # Upstream ONNX features go into the torch head just as well (backends interchange them).
    cls2, reg2 = backend.track((zf_ref,), x)
    _close(cls2, cls_ref, 'cls from onnx features', OUTPUT_TOL)
    _close(reg2, reg_ref, 'reg from onnx features', OUTPUT_TOL)


def test_outputs_are_independent_copies(crops):
    backend = TorchBackend(_upstream_spec(2))
    z, x = crops
    features = backend.encode_template(z)
    cls, reg = backend.track(features, x)
    for arr in (*features, cls, reg):
        assert arr.flags.writeable and arr.flags.c_contiguous and arr.base is None
    keep_f, keep_c = features[0].copy(), cls.copy()
    features[0][...] = 0.0
    cls[...] = 0.0
    again_f = backend.encode_template(z)[0]
    again_c, _ = backend.track((keep_f,), x)
    np.testing.assert_array_equal(again_f, keep_f)
    np.testing.assert_array_equal(again_c, keep_c)


def test_normalisation_from_spec(crops):
    spec = _upstream_spec(1)
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 0.5)
    normed = TorchBackend(dataclasses.replace(spec, input_mean=mean, input_std=std))
    plain = TorchBackend(spec)
    z, x = crops
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    f_norm = normed.encode_template(z)
    f_plain = plain.encode_template((z - m) / s)
    np.testing.assert_allclose(f_norm[0], f_plain[0], rtol=1e-5, atol=1e-4)
    assert not np.allclose(f_norm[0], plain.encode_template(z)[0], atol=1e-2)
    c_norm, _ = normed.track(f_norm, x)
    c_plain, _ = plain.track(f_plain, (x - m) / s)
    np.testing.assert_allclose(c_norm, c_plain, rtol=1e-5, atol=1e-4)


def test_clear_errors(crops, tmp_path):
    spec = _upstream_spec(2)
    with pytest.raises(BackendError, match='fp16 is only supported on CUDA'):
        TorchBackend(spec, device='cpu', fp16=True)
    with pytest.raises(BackendError, match='not supported'):
        TorchBackend(spec, device='tpu')
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match='sees no CUDA device'):
            TorchBackend(spec, device='cuda')
    with pytest.raises(BackendError, match='no PyTorch definition'):
        TorchBackend(dataclasses.replace(spec, arch='lighttrack'))
    with pytest.raises(BackendError, match='names no network architecture'):
        TorchBackend(dataclasses.replace(spec, arch=''))
    with pytest.raises(BackendError, match='no .checkpoint. file'):
        TorchBackend(dataclasses.replace(spec, files={}))
    with pytest.raises(BackendError, match='does not match'):  # v2 weights, v3 net
        TorchBackend(dataclasses.replace(spec, arch='nanotrack_v3'))
    backend = TorchBackend(spec)
    with pytest.raises(BackendError, match=r'\(1, 3, S, S\)'):
        backend.encode_template(crops[0][0])


def test_fp32_on_cuda_turns_off_tf32_only_for_the_call(crops):
    """The fp32 CUDA calls run with cuDNN's TF32 off (1e-3 error on Ampere+, Orin too)."""
    backend = TorchBackend(_upstream_spec(2))
    assert not backend._no_tf32  # the CPU has no TF32 to turn off
    backend._no_tf32 = True  # what an fp32 backend on CUDA sets
    before = torch.backends.cudnn.allow_tf32
    with backend._inference():
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.is_inference_mode_enabled()
    assert torch.backends.cudnn.allow_tf32 == before
    # The flags wrap every call: CPU results are unchanged by them.
    z, x = crops
    np.testing.assert_array_equal(backend.encode_template(z)[0],
                                  TorchBackend(_upstream_spec(2)).encode_template(z)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_fp32_matches_cpu(crops):
    spec = _upstream_spec(3)
    z, x = crops
    cpu, gpu = TorchBackend(spec), TorchBackend(spec, device='cuda')
    f_cpu, f_gpu = cpu.encode_template(z), gpu.encode_template(z)
    _close(f_gpu[0], f_cpu[0], 'fp32 zf', 1e-4)
    _close(gpu.track(f_cpu, x)[0], cpu.track(f_cpu, x)[0], 'fp32 cls', 1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_graph_replay_matches_eager(crops):
    """The replayed graphs take each call's crops and features, not the captured ones."""
    spec = _upstream_spec(3)
    z, x = crops
    graphed = TorchBackend(spec, device='cuda')
    eager = TorchBackend(spec, device='cuda', cuda_graph=False)
    assert graphed._use_graphs and not eager._use_graphs
    rng = np.random.default_rng(5)
    for _ in range(3):
        zc = np.clip(z + rng.normal(0, 20, z.shape), 0, 255).astype(np.float32)
        xc = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.float32)
        f = eager.encode_template(zc)
        _close(graphed.encode_template(zc)[0], f[0], 'template graph replay', 1e-5)
        for got, ref in zip(graphed.track(f, xc), eager.track(f, xc)):
            _close(got, ref, 'search graph replay', 1e-5)
    assert graphed._use_graphs
    assert sorted(key[0] for key in graphed._graphs) == ['search', 'template']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_fp16_close_to_cpu(crops):
    spec = _upstream_spec(3)
    z, x = crops
    cpu = TorchBackend(spec)
    gpu = TorchBackend(spec, device='cuda', fp16=True)
    assert gpu.device == 'cuda'
    f_cpu, f_gpu = cpu.encode_template(z), gpu.encode_template(z)
    assert f_gpu[0].dtype == np.float32
    _close(f_gpu[0], f_cpu[0], 'fp16 zf', 2e-2)
    c_cpu, _ = cpu.track(f_cpu, x)
    c_gpu, _ = gpu.track(f_gpu, x)
    _close(c_gpu, c_cpu, 'fp16 cls', 5e-2)


@pytest.mark.parametrize('version', (1, 2, 3))
def test_registry_and_parity_with_onnxruntime_backend(version, crops, tmp_path):
    """An imported upstream model directory: torch and onnxruntime backends agree."""
    importer = pytest.importorskip('siam_tracker_ros.nets.nanotrack_import')
    _upstream_spec(version)  # skips without ../shared
    importer.import_nanotrack(REFS / f'nanotrack-v{version}', tmp_path / 'model')
    spec = load_manifest(tmp_path / 'model')
    assert spec.arch == f'nanotrack_v{version}' and 'checkpoint' in spec.files
    torch_backend = create_backend('torch', spec)
    assert isinstance(torch_backend, TorchBackend)
    ort_backend = create_backend('onnxruntime', spec)
    z, x = crops
    f_torch, f_ort = torch_backend.encode_template(z), ort_backend.encode_template(z)
    _close(f_torch[0], f_ort[0], 'zf torch vs ort', FEATURE_TOL)
    for features in (f_torch, f_ort):  # features are interchangeable between backends
        c_t, r_t = torch_backend.track(features, x)
        c_o, r_o = ort_backend.track(features, x)
        _close(c_t, c_o, 'cls torch vs ort', OUTPUT_TOL)
        _close(r_t, r_o, 'reg torch vs ort', OUTPUT_TOL)
