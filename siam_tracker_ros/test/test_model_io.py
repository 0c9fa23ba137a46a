"""Model directories: upstream import, manifest checks, fetch from a mirror, backend errors."""
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from shared_data import MODELS, need
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.config import MODEL_FIELDS
from siam_tracker_ros.core.manifest import load_manifest, ModelError
from siam_tracker_ros.nets.fetch import CATALOG, fetch_model, source_url
from siam_tracker_ros.nets.nanotrack_import import import_nanotrack, make_backbone_dynamic


@pytest.fixture(scope='module')
def v3_model(tmp_path_factory):
    return import_nanotrack(need(MODELS / 'nanotrack-v3'), tmp_path_factory.mktemp('v3'))


def test_import_writes_a_verified_manifest(v3_model):
    spec = load_manifest(v3_model.root)
    assert spec.arch == 'nanotrack_v3' and spec.layout == 'backbone_head'
    step = spec.tracker.step
    assert (step.penalty_k, step.window_influence, step.lr) == (0.138, 0.455, 0.348)
    assert set(spec.files) == {'backbone', 'head', 'checkpoint'}
    assert all(len(h) == 64 for h in spec.sha256.values())
    # only what the weights were tuned with is frozen into the manifest
    recorded = json.loads((spec.root / 'manifest.json').read_text())['tracker']
    assert set(recorded) == set(MODEL_FIELDS)


def test_cached_imports_follow_the_settings_the_importer_writes(tmp_path, monkeypatch):
    # An upstream folder is imported once into the cache; the import writes the tracker's
    # model settings (the confidence coefficients among them) into its manifest. When those
    # change (a refit shipped in a new release), the importer does or the cue definition does,
    # the folder is imported again rather than the stale manifest reused.
    from siam_tracker_ros.core.config import TrackerConfig
    from siam_tracker_ros.factory import resolve_model
    from siam_tracker_ros.nets import nanotrack_import
    first = resolve_model(need(MODELS / 'nanotrack-v3'), tmp_path)
    assert first.tracker.confidence == TrackerConfig().confidence
    assert resolve_model(MODELS / 'nanotrack-v3', tmp_path).root == first.root
    read = nanotrack_import.read_tracker_config
    monkeypatch.setattr(nanotrack_import, 'read_tracker_config', lambda path: read(path).replace(
        conf_coefficients=(-2.0, 0.5, 1.0, -0.1)))
    refit = resolve_model(MODELS / 'nanotrack-v3', tmp_path)
    assert refit.root != first.root
    assert load_manifest(refit.root).tracker.confidence.coefficients == (-2.0, 0.5, 1.0, -0.1)
    monkeypatch.setattr(nanotrack_import, 'IMPORT_FORMAT', 'a later importer')
    later = resolve_model(MODELS / 'nanotrack-v3', tmp_path).root
    assert later not in (first.root, refit.root)
    # A new cue definition re-imports too (the manifest records the definition).
    monkeypatch.setattr(nanotrack_import, 'CUES_VERSION', nanotrack_import.CUES_VERSION + 1)
    newest = resolve_model(MODELS / 'nanotrack-v3', tmp_path).root
    assert newest not in (first.root, refit.root, later)


def test_coefficients_fitted_for_earlier_cues_give_way_to_the_defaults(v3_model, tmp_path):
    # A model directory written before the score cue became absolute carries coefficients for
    # the relative cue (no 'confidence_cues' entry): applied to today's cues they would call
    # every box found. They are replaced by the defaults, with a warning; current ones stay.
    from siam_tracker_ros.core.config import TrackerConfig
    old = tmp_path / 'old'
    shutil.copytree(v3_model.root, old)
    data = json.loads((old / 'manifest.json').read_text())
    assert data['confidence_cues'] == 2
    own = [-3.0, 0.5, 1.0, -0.2]
    data['tracker']['conf_coefficients'] = own
    (old / 'manifest.json').write_text(json.dumps(data))
    assert load_manifest(old).tracker.confidence.coefficients == tuple(own)
    del data['confidence_cues']
    data['tracker']['conf_coefficients'] = [3.4971, 0.6832, 1.443, -0.0245]
    (old / 'manifest.json').write_text(json.dumps(data))
    with pytest.warns(UserWarning, match='cue definition 1, not 2.*--fit-confidence'):
        spec = load_manifest(old)
    assert spec.tracker.confidence == TrackerConfig().confidence
    assert spec.tracker.step == v3_model.tracker.step


def test_dynamic_backbone_equals_the_published_dynamic_v2(tmp_path):
    import onnxruntime as ort
    ref_path = need(MODELS / 'nanotrack-v2-dynamic-backbone' / 'nanotrack_backbone_dy_sim.onnx')
    make_backbone_dynamic(MODELS / 'nanotrack-v2' / 'nanotrack_backbone_sim.onnx',
                          tmp_path / 'dyn.onnx')
    ours = ort.InferenceSession(str(tmp_path / 'dyn.onnx'), providers=['CPUExecutionProvider'])
    ref = ort.InferenceSession(str(ref_path), providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(1)
    for side, feat in ((127, 8), (255, 16)):
        x = rng.uniform(0, 255, (1, 3, side, side)).astype(np.float32)
        a = ours.run(None, {'input': x})[0]
        b = ref.run(None, {'input': x})[0]
        assert a.shape == (1, 48, feat, feat)
        # same weights, different exporter: the ../shared notes measured 9.5e-6 at 255
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_ort_backend_shapes(v3_model):
    backend = OnnxRuntimeBackend(v3_model)
    feats = backend.encode_template(np.full((1, 3, 127, 127), 100, np.float32))
    assert [f.shape for f in feats] == [(1, 96, 8, 8)]
    cls, reg = backend.track(feats, np.full((1, 3, 255, 255), 100, np.float32))
    assert cls.shape == (1, 2, 15, 15) and reg.shape == (1, 4, 15, 15)


def test_ort_threads_search_session_only(v3_model):
    """
    Give the per-frame session the threads, the template session one.

    The template session always runs on the caller's thread (a second spinning pool slowed the
    tracker down), and the outputs do not depend on the thread count.
    """
    one = OnnxRuntimeBackend(v3_model, threads=1)
    two = OnnxRuntimeBackend(v3_model, threads=2)
    assert two._second.get_session_options().intra_op_num_threads == 2
    assert two._first.get_session_options().intra_op_num_threads == 1
    assert one._second.get_session_options().intra_op_num_threads == 1
    rng = np.random.default_rng(3)
    z = rng.uniform(0, 255, (1, 3, 127, 127)).astype(np.float32)
    x = rng.uniform(0, 255, (1, 3, 255, 255)).astype(np.float32)
    for a, b in zip(one.track(one.encode_template(z), x), two.track(two.encode_template(z), x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(BackendError, match='threads'):
        OnnxRuntimeBackend(v3_model, threads=0)
    with pytest.raises(BackendError, match='optimization'):
        OnnxRuntimeBackend(v3_model, optimization='fast')


def test_corrupt_and_missing_files_are_reported(v3_model, tmp_path):
    copy = tmp_path / 'model'
    shutil.copytree(v3_model.root, copy)
    with open(copy / 'head.onnx', 'r+b') as f:
        f.seek(100)
        f.write(b'\x00garbage\x00')
    with pytest.raises(ModelError, match='corrupt'):
        load_manifest(copy)
    (copy / 'head.onnx').unlink()
    with pytest.raises(ModelError, match='missing'):
        load_manifest(copy)
    (copy / 'manifest.json').write_text('{not json')
    with pytest.raises(ModelError, match='not valid JSON'):
        load_manifest(copy)
    with pytest.raises(ModelError, match='does not exist'):
        load_manifest(tmp_path / 'nowhere')


def test_backend_reports_an_unloadable_graph(v3_model, tmp_path):
    copy = tmp_path / 'model'
    shutil.copytree(v3_model.root, copy)
    (copy / 'head.onnx').write_bytes(b'this is not an onnx file')
    spec = load_manifest(copy, verify=False)
    with pytest.raises(BackendError, match='may be corrupt'):
        OnnxRuntimeBackend(spec)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror():
    """Serve ../shared/reference-models over loopback HTTP."""
    root = need(MODELS)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_fetch_over_loopback_http_checks_hashes(http_mirror, tmp_path):
    spec = fetch_model('nanotrack-v3', tmp_path / 'm', mirror=http_mirror)
    assert spec.name == 'nanotrack-v3' and spec.arch == 'nanotrack_v3'
    load_manifest(spec.root)


def test_fetch_from_a_folder_mirror_by_cli(tmp_path, capsys):
    need(MODELS)
    assert siam_model.main(['fetch', 'nanotrack-v2', '--mirror', str(MODELS),
                            '--out', str(tmp_path / 'm')]) == 0
    assert 'fetched nanotrack-v2' in capsys.readouterr().out
    manifest = json.loads((tmp_path / 'm' / 'manifest.json').read_text())
    assert manifest['tracker']['penalty_k'] == 0.15


def test_fetch_refuses_a_corrupt_mirror(tmp_path, capsys):
    mirror = tmp_path / 'mirror' / 'nanotrack-v1'
    shutil.copytree(need(MODELS / 'nanotrack-v1'), mirror)
    (mirror / 'configv1.yaml').write_text('TRACK: {}\n')
    assert siam_model.main(['fetch', 'nanotrack-v1', '--mirror', str(tmp_path / 'mirror'),
                            '--out', str(tmp_path / 'm')]) == 1
    assert 'does not match the pinned' in capsys.readouterr().err
    assert not (tmp_path / 'm').exists()


def test_fetch_without_a_mirror_names_pinned_upstream_urls():
    name = 'nanotrack-v3'
    url = source_url(name, CATALOG[name][1][0], None)
    assert url.startswith('https://') and '248663fde6bf7c40190cf10ee396d5662919ecd3' in url


def test_unreachable_source_is_a_clear_error(tmp_path, capsys):
    assert siam_model.main(['fetch', 'nanotrack-v3', '--mirror', 'http://127.0.0.1:9',
                            '--out', str(tmp_path / 'm')]) == 1
    assert 'SIAM_MODEL_MIRROR' in capsys.readouterr().err


def test_core_and_eval_import_no_heavy_or_ros_modules():
    code = ('import sys, siam_tracker_ros.core.tracker, siam_tracker_ros.core.manifest, '
            'siam_tracker_ros.eval.metrics, siam_tracker_ros.eval.synthetic; '
            'bad = [m for m in sys.modules if m.split(".")[0] in '
            '("torch", "rclpy", "tensorrt", "onnx", "onnxruntime") or m.endswith("_msgs")]; '
            'print(bad); sys.exit(1 if bad else 0)')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_auto_backend_is_onnxruntime_on_cpu():
    from siam_tracker_ros.backends.registry import resolve_name
    assert resolve_name('auto', 'cpu') == 'onnxruntime'
    assert resolve_name('torch', 'cpu') == 'torch'
    with pytest.raises(BackendError, match='unknown backend'):
        resolve_name('tflite')
