"""
Camera-motion estimate and the tracker carrying a lost target's place along a camera pan.

The estimate (sparse optical flow + RANSAC similarity) runs on a real frame moved by a known
transform.
"""
import cv2
import numpy as np
import pytest

from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.core.camera_motion import (
    apply_to_point, estimate_camera_motion, scale_of)
from siam_tracker_ros.core.types import BBox, TrackState
from siam_tracker_ros.factory import load_tracker
from siam_tracker_ros.io.sequences import load_sequence, read_frame


@pytest.fixture(scope='module')
def frame():
    seq = load_sequence(need(SEQUENCES / 'uav_building5'))
    return read_frame(seq.frames[0])


def moved(image, matrix):
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_a_pan_is_measured_to_a_fraction_of_a_pixel(frame):
    truth = np.array([[1.0, 0.0, 23.0], [0.0, 1.0, -11.0]])
    m = estimate_camera_motion(frame, moved(frame, truth))
    assert m is not None
    np.testing.assert_allclose(m[:, 2], truth[:, 2], atol=0.5)
    assert abs(scale_of(m) - 1.0) < 0.005


def test_a_zoom_and_turn_are_measured(frame):
    h, w = frame.shape[:2]
    truth = cv2.getRotationMatrix2D((w / 2, h / 2), 3.0, 1.06)
    m = estimate_camera_motion(frame, moved(frame, truth))
    assert m is not None
    assert scale_of(m) == pytest.approx(1.06, abs=0.01)
    for x, y in ((100.0, 100.0), (w - 100.0, h - 100.0)):
        want = truth @ np.array([x, y, 1.0])
        assert np.hypot(*(np.array(apply_to_point(m, x, y)) - want)) < 2.0


def test_no_estimate_without_texture_or_with_a_size_change(frame):
    blank = np.full_like(frame, 90)
    assert estimate_camera_motion(blank, blank) is None
    assert estimate_camera_motion(frame, frame[:-8]) is None


def test_lost_target_place_follows_a_pan_only_when_asked(frame):
    """
    Blank the target out while the camera pans 6 px per frame to the left.

    With motion_camera the held box goes along with the scene, without it the box stays put.
    """
    model = need(MODELS / 'nanotrack-v3')
    box = BBox(530.0, 525.0, 22.0, 62.0)                       # the sequence's first box
    fill = [int(c) for c in cv2.mean(frame)[:3]]
    frames = []
    for k in range(1, 9):
        shifted = moved(frame, np.array([[1.0, 0.0, -6.0 * k], [0.0, 1.0, 0.0]]))
        x0 = int(box.x - 6 * k) - 10
        cv2.rectangle(shifted, (x0, int(box.y) - 10), (x0 + 42, int(box.y) + 72), fill, -1)
        frames.append(shifted)
    held = {}
    for follow in (False, True):
        tracker = load_tracker(model, backend='onnxruntime', motion_camera=follow)
        tracker.init(frame, box)
        results = [tracker.update(f) for f in frames]
        lost = [i for i, r in enumerate(results) if r.state != TrackState.TRACKING]
        assert len(lost) >= 4 and lost == list(range(lost[0], len(frames))), lost
        held[follow] = (lost, results)
    lost, results = held[False]
    assert len({results[i].box for i in lost}) == 1
    lost, results = held[True]
    first, last = results[lost[0]].box, results[lost[-1]].box
    # Carried from the first lost frame on: 6 px per frame to the left, nothing vertically
    # (the target did not move on its own before it was lost).
    assert last.cx - first.cx == pytest.approx(-6.0 * (lost[-1] - lost[0]), abs=2.0)
    assert last.cy == pytest.approx(first.cy, abs=2.0)
