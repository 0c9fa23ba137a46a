"""
The real tracker node runs a TAFA model folder (temporal search graph) as it runs any other.

The folder is made as a user makes it (siam-train's modules.pth with a non-zero TAFA module,
then ``siam-model export --modules``); the node gets it as ``model_path`` and nothing else
changes. Frames of bag are published in lockstep (see test_ros_node). Needs the real weights
and sequences in ../shared.
"""

import cv2
import needs_torch  # noqa: F401
import numpy as np
import pytest

from ros_helpers import diag_values, require_interfaces, ros_env, RosClient
from shared_data import MODELS, need, SEQUENCES

require_interfaces()

from siam_tracker_interfaces.msg import TrackedObject  # noqa: E402, I100
from siam_tracker_ros.cli import siam_model  # noqa: E402
from siam_tracker_ros.eval.metrics import iou  # noqa: E402
from siam_tracker_ros.tooling.isolation import stop_process  # noqa: E402
from test_ros_node import _start_node, Graph, wait_ready  # noqa: E402
from test_tafa_runtime import _write_modules  # noqa: E402

FRAMES = 30


@pytest.fixture(scope='module')
def tafa_model(tmp_path_factory):
    weights = need(MODELS / 'nanotrack-v3' / 'nanotrackv3.pth')
    root = tmp_path_factory.mktemp('tafa')
    modules = _write_modules(root / 'modules.pth')
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(weights),
                            '--modules', str(modules), '--out', str(root / 'model')]) == 0
    return root / 'model'


def test_node_tracks_with_a_tafa_model_folder(ros_domain, model_cache, tafa_model,
                                              tmp_path):
    seq = need(SEQUENCES / 'bag')
    frames = [cv2.imread(str(f), cv2.IMREAD_COLOR)
              for f in sorted((seq / 'img').glob('*.jpg'))[:FRAMES]]
    gt = np.array([[float(v) for v in line.split(',')]
                   for line in (seq / 'groundtruth.txt').read_text().splitlines()[:FRAMES]])
    log = tmp_path / 'tracker.log'
    proc = _start_node(ros_env(ros_domain, model_cache), log, 'siam_tracker',
                       '-r', 'image:=/test/image', '-r', 'camera_info:=/test/camera_info',
                       '-p', f'model_path:={tafa_model}', '-p', 'backend:=onnxruntime',
                       '-p', 'qos_reliability:=reliable', '-p', 'diagnostics_period:=0.5',
                       '-p', 'image_timeout:=30.0')
    client = RosClient()
    try:
        graph = Graph(proc, client, log)
        values = diag_values(wait_ready(graph))
        assert values['model'] == 'nanotrack_v3-tafa' and values['backend'] == 'onnxruntime'
        header0 = graph.publish(frames[0], 0)
        response = graph.set_target_on_frame(gt[0], header0.stamp)
        assert response.success, response.message
        tid = response.target_id
        assert graph.tracked.wait_for(lambda m: m.target_id == tid, timeout=5.0) is not None
        boxes = [gt[0]]
        for i, frame in enumerate(frames[1:], start=1):
            _, msg = graph.step(frame, i)
            assert msg.target_id == tid and msg.state == TrackedObject.TRACKING
            boxes.append([msg.box.x, msg.box.y, msg.box.width, msg.box.height])
        ious = iou(np.array(boxes), gt)
        assert (ious >= 0.5).mean() >= 0.9, ious.round(2)
    finally:
        client.close()
        stop_process(proc)
    assert 'Traceback' not in log.read_text()
