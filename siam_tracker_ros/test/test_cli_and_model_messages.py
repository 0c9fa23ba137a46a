"""
siam-tracker-cli options, published box clipping, model-path messages, torch warm-up.

No running ROS graph here (see test_shutdown_and_topics.py for the processes). The model tests
use the real NanoTrack v3 files in ../shared/reference-models (skipped, with the reason, when
absent).
"""
import json
import math
import shutil

import numpy as np
import pytest

from ros_helpers import MODEL_V3, require_interfaces
from siam_tracker_ros.cli.tracker_cli import build_parser
from siam_tracker_ros.core.manifest import load_manifest, MANIFEST_NAME, ModelError
from siam_tracker_ros.core.types import BBox, TrackResult, TrackState
from siam_tracker_ros.factory import load_tracker, resolve_model


def _need_model():
    if not (MODEL_V3 / 'nanotrack_backbone.onnx').is_file():
        pytest.skip(f'{MODEL_V3} is absent (reference models in ../shared; set SIAM_SHARED)')
    return MODEL_V3


# --- siam-tracker-cli options ---------------------------------------------------------------

@pytest.mark.parametrize('argv', (
    ['--timeout', '2.5', 'echo', '--count', '3'],
    ['echo', '--count', '3', '--timeout', '2.5'],
    ['echo', '--timeout', '2.5', '--count', '3'],
    ['--timeout', '9', 'echo', '--timeout', '2.5', '--count', '3'],   # the later one wins
))
def test_timeout_goes_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert (args.command, args.timeout, args.count, args.node) == ('echo', 2.5, 3,
                                                                   'siam_tracker')


def test_node_after_the_subcommand_and_defaults_kept():
    args = build_parser().parse_args(['set-target', '1', '2', '30', '40', '--node', '/d1/t'])
    assert args.node == '/d1/t' and args.box == [1, 2, 30, 40] and args.timeout == 10.0
    args = build_parser().parse_args(['--node', '/d2/t', 'stop'])
    assert args.node == '/d2/t' and args.timeout == 10.0


@pytest.mark.parametrize('value', ('0', '-1'))
def test_timeout_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(['echo', '--timeout', value])
    assert exc.value.code == 2
    assert '--timeout: must be > 0 seconds' in capsys.readouterr().err


# --- published boxes -------------------------------------------------------------------------

def test_published_box_is_clipped_to_the_image():
    require_interfaces()
    from std_msgs.msg import Header

    from siam_tracker_ros.ros import conversions as conv
    from siam_tracker_ros.ros.video_publisher import pinhole_camera_info

    info = pinhole_camera_info(480, 360)

    def published(box):
        result = TrackResult(box, 0.9, TrackState.TRACKING, 0.9)
        return conv.tracked_object(Header(), result, 1, 480, 360, info)
    # The case: a box reaching 6.6 px past the left edge.
    msg = published(BBox(-6.6, 100.0, 40.0, 30.0))
    assert (msg.box.x, msg.box.y) == (0.0, 100.0)
    assert msg.box.width == pytest.approx(33.4) and msg.box.height == 30.0
    # Centre and bearing are those of the clipped box.
    assert msg.center_x_norm == pytest.approx(2 * 16.7 / 480 - 1)
    fx, cx = info.k[0], info.k[2]
    assert msg.azimuth == pytest.approx(math.atan((16.7 - cx) / fx))
    # Past the bottom-right corner.
    msg = published(BBox(470.0, 350.0, 20.0, 20.0))
    assert (msg.box.x, msg.box.y, msg.box.width, msg.box.height) == (470, 350, 10, 10)
    # Wholly outside: a 1-px strip at the nearest edge, never a zero or negative size.
    for box, want in ((BBox(-50.0, 10.0, 20.0, 20.0), (0, 10, 1, 20)),
                      (BBox(500.0, -40.0, 20.0, 20.0), (479, 0, 1, 1))):
        msg = published(box)
        assert (msg.box.x, msg.box.y, msg.box.width, msg.box.height) == want
        assert -1.0 <= msg.center_x_norm <= 1.0 and -1.0 <= msg.center_y_norm <= 1.0
    # A box inside the image is published as it is.
    msg = published(BBox(10.5, 20.25, 30.0, 40.0))
    assert (msg.box.x, msg.box.y, msg.box.width, msg.box.height) == (10.5, 20.25, 30, 40)


# --- model paths and corrupt graphs ----------------------------------------------------------

@pytest.fixture(scope='module')
def product_model(tmp_path_factory):
    """Import NanoTrack v3 into a product model directory (with manifest.json)."""
    return resolve_model(_need_model(), cache_dir=tmp_path_factory.mktemp('cache')).root


def test_manifest_json_as_model_path_loads_its_folder(product_model):
    manifest = product_model / MANIFEST_NAME
    assert load_manifest(manifest).root == product_model
    assert resolve_model(manifest).root == product_model
    tracker = load_tracker(manifest, backend='onnxruntime')
    assert tracker.spec.root == product_model


def test_other_file_as_model_path_is_reported_as_a_file(product_model):
    graph = product_model / 'head.onnx'
    with pytest.raises(ModelError, match='is a file; the model path is a model directory'):
        resolve_model(graph)
    with pytest.raises(ModelError, match=r'is a file; give the model directory'):
        load_manifest(graph)


@pytest.mark.parametrize('role', ('backbone', 'head'))
def test_corrupt_upstream_graph_is_named(role, tmp_path):
    folder = tmp_path / 'nanotrack-v3'
    shutil.copytree(_need_model(), folder)
    graph = folder / f'nanotrack_{role}.onnx'
    graph.write_bytes(graph.read_bytes()[:100_000])
    with pytest.raises(ModelError) as exc:
        load_tracker(folder, backend='onnxruntime')
    text = str(exc.value)
    assert f'{role} graph {graph} is not a readable ONNX file' in text, text
    assert 'download the model again' in text


def test_corrupt_graph_in_a_model_directory_is_named(product_model, tmp_path):
    from siam_tracker_ros.backends.base import BackendError
    from siam_tracker_ros.backends.onnxruntime_backend import search_graph

    head = tmp_path / 'head.onnx'
    head.write_bytes((product_model / 'head.onnx').read_bytes()[:100_000])
    with pytest.raises(BackendError, match=f'cannot read the head graph {head}'):
        search_graph(product_model / 'backbone.onnx', head)
    # Through the manifest (sha256 recorded), the same file is named as corrupt.
    model = tmp_path / 'model'
    shutil.copytree(product_model, model)
    shutil.copyfile(head, model / 'head.onnx')
    with pytest.raises(ModelError, match=f'head file {model / "head.onnx"} is corrupt'):
        load_tracker(model, backend='onnxruntime')
    # Without a recorded sha256 the backend names it.
    data = json.loads((model / MANIFEST_NAME).read_text())
    data['files']['head']['sha256'] = ''
    (model / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BackendError, match=f'head graph {model / "head.onnx"}'):
        load_tracker(model, backend='onnxruntime')


# --- torch backend warm-up -------------------------------------------------------------------

def test_torch_backend_warms_up_at_load(product_model, monkeypatch):
    pytest.importorskip('torch')
    from siam_tracker_ros.backends.torch_backend import TorchBackend

    spec = load_manifest(product_model)
    calls = []
    encode, track = TorchBackend.encode_template, TorchBackend.track

    def spy_encode(self, crop):
        calls.append(('template', np.asarray(crop).shape))
        return encode(self, crop)

    def spy_track(self, features, crop):
        calls.append(('search', np.asarray(crop).shape))
        return track(self, features, crop)
    monkeypatch.setattr(TorchBackend, 'encode_template', spy_encode)
    monkeypatch.setattr(TorchBackend, 'track', spy_track)
    TorchBackend(spec, warmup=False)
    assert calls == []
    z, x = spec.tracker.step.exemplar_size, spec.tracker.step.instance_size
    backend = TorchBackend(spec)
    assert calls == [('template', (1, 3, z, z)), ('search', (1, 3, x, x))]
    # Through the registry (what the node uses) too.
    calls.clear()
    tracker = load_tracker(product_model, backend='torch')
    assert tracker.backend.name == backend.name == 'torch'
    assert calls == [('template', (1, 3, z, z)), ('search', (1, 3, x, x))]
