"""The tracker with real NanoTrack weights on ONNX Runtime: synthetic and real sequences."""
import numpy as np
import pytest

from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.core.types import BBox, TrackState
from siam_tracker_ros.eval.synthetic import moving_target
from siam_tracker_ros.factory import load_tracker


def iou(box, gt):
    x1, y1 = max(box.x, gt[0]), max(box.y, gt[1])
    x2, y2 = min(box.x + box.w, gt[0] + gt[2]), min(box.y + box.h, gt[1] + gt[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (box.w * box.h + gt[2] * gt[3] - inter)


@pytest.fixture(scope='module')
def synthetic():
    return moving_target(frames=90)


@pytest.fixture(scope='module', params=['nanotrack-v2', 'nanotrack-v3'])
def tracker(request, tmp_path_factory):
    import os
    os.environ.setdefault('SIAM_MODEL_CACHE', str(tmp_path_factory.mktemp('cache')))
    return load_tracker(need(MODELS / request.param), backend='onnxruntime')


def run(tracker, frames, first_box):
    tracker.init(frames[0], BBox.from_sequence(first_box))
    return [tracker.update(f) for f in frames[1:]]


def test_keeps_the_synthetic_target(tracker, synthetic):
    results = run(tracker, synthetic.frames, synthetic.boxes[0])
    ious = [iou(r.box, g) for r, g in zip(results, synthetic.boxes[1:])]
    assert min(ious) > 0.7, f'min IoU {min(ious):.3f}'
    assert all(r.state == TrackState.TRACKING for r in results)
    assert all(0.0 <= r.score <= 1.0 for r in results)


def test_per_frame_path_is_deterministic(tracker, synthetic):
    a = [r.box.as_tuple() for r in run(tracker, synthetic.frames[:30], synthetic.boxes[0])]
    b = [r.box.as_tuple() for r in run(tracker, synthetic.frames[:30], synthetic.boxes[0])]
    assert a == b


def test_real_sequence_bag(tracker):
    import cv2
    root = need(SEQUENCES / 'bag')
    gt = np.loadtxt(root / 'groundtruth.txt', delimiter=',')
    frames = [cv2.imread(str(p)) for p in sorted((root / 'img').glob('*.jpg'))]
    results = run(tracker, frames, gt[0])
    ious = np.array([iou(r.box, g) for r, g in zip(results, gt[1:])])
    auc = np.mean([np.mean(ious > t) for t in np.linspace(0, 1, 21)])
    assert auc > 0.6, f'AUC on bag {auc:.3f}'


def test_bad_input_is_refused_with_a_reason(tracker, synthetic):
    frame = synthetic.frames[0]
    with pytest.raises(ValueError, match='zero or negative'):
        tracker.init(frame, BBox(10, 10, 0, 5))
    with pytest.raises(ValueError, match='NaN'):
        tracker.init(frame, BBox(float('nan'), 10, 5, 5))
    with pytest.raises(ValueError, match='outside'):
        tracker.init(frame, BBox(5000, 10, 5, 5))
    with pytest.raises(ValueError, match='HxWx3'):
        tracker.init(frame[:, :, 0], BBox(10, 10, 20, 20))
    with pytest.raises(ValueError, match='uint8'):
        tracker.init(frame.astype(np.float32), BBox(10, 10, 20, 20))
    tracker.stop()
    with pytest.raises(RuntimeError, match='init'):
        tracker.update(frame)


def test_runtime_config_changes(tracker, synthetic):
    tracker.init(synthetic.frames[0], BBox.from_sequence(synthetic.boxes[0]))
    tracker.set_config(tracker.config.replace(found_threshold=1.0, conf_strong_appearance=2.0))
    result = tracker.update(synthetic.frames[1])
    assert result.state == TrackState.LOST          # nothing reaches a score of 1.0
    with pytest.raises(ValueError, match='cannot change while tracking'):
        tracker.set_config(tracker.config.replace(instance_size=287))
    with pytest.raises(ValueError, match='outside'):
        tracker.config.replace(window_influence=1.5)
    tracker.set_config(tracker.config.replace(found_threshold=0.3))
