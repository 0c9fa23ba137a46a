"""OpenCV peer trackers behind the TrackResult interface, on a synthetic moving square."""
import math

import cv2
import numpy as np
import pytest

from shared_data import MODELS, need
from siam_tracker_ros.core.types import BBox, TrackState
from siam_tracker_ros.eval.metrics import iou
from siam_tracker_ros.eval.peers import (
    create_peer, parse_peer_spec, PEERS, PeerUnavailable, to_cv_rect)

SIZE = 40


def moving_square(frames: int = 60, width: int = 320, height: int = 240):
    """Make a textured square glide over a smooth textured background; frames and boxes."""
    rng = np.random.default_rng(7)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                                  (0, 0), 3)
    background = (background.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    patch = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    patch[..., 2] = np.where(((yy // 8) + (xx // 8)) % 2 == 0, 230, 30)
    patch[..., 1] = 40 + 4 * xx
    patch[..., 0] = 200 - 4 * yy
    images, boxes = [], []
    for t in range(frames):
        x = 40 + 3.0 * t
        y = 90 + 30 * math.sin(t / 9.0)
        image = background.copy()
        xi, yi = int(round(x)), int(round(y))
        image[yi:yi + SIZE, xi:xi + SIZE] = patch
        images.append(image)
        boxes.append((float(xi), float(yi), float(SIZE), float(SIZE)))
    return images, np.array(boxes)


def _follow(peer, images, boxes):
    first = peer.init(images[0], BBox.from_sequence(boxes[0]))
    assert first.state == TrackState.TRACKING and first.box == BBox.from_sequence(boxes[0])
    results = [peer.update(image) for image in images[1:]]
    pred = np.array([r.box.as_tuple() for r in results])
    return results, iou(pred, boxes[1:])


@pytest.mark.parametrize('kind', ['opencv-mil', 'opencv-csrt', 'opencv-kcf'])
def test_classic_peer_follows_moving_square(kind):
    try:
        peer = create_peer(kind)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    images, boxes = moving_square()
    results, ious = _follow(peer, images, boxes)
    if kind == 'opencv-mil':
        # TrackerMIL samples from an RNG OpenCV does not let us seed: over 30 runs in one
        # process it kept IoU >= 0.59 for the first 8 frames and then sometimes drifted.
        assert (ious[:8] > 0.5).all(), f'{kind} IoU per frame: {np.round(ious, 2)}'
    else:
        assert np.mean(ious > 0.5) >= 0.9, f'{kind} IoU per frame: {np.round(ious, 2)}'
    for r in results:
        assert math.isnan(r.score)              # these trackers have no score in OpenCV
        assert r.confidence == (1.0 if r.found else 0.0)
    assert sum(r.found for r in results) >= 0.9 * len(results)


def test_nano_peer_follows_moving_square_with_score():
    model = MODELS / 'nanotrack-v2'
    need(model / 'nanotrack_head_sim.onnx')
    peer = create_peer('opencv-nano', str(model))
    images, boxes = moving_square()
    results, ious = _follow(peer, images, boxes)
    assert np.mean(ious > 0.5) >= 0.9, np.round(ious, 2)
    scores = np.array([r.score for r in results])
    assert np.all((scores >= 0) & (scores <= 1)) and scores.mean() > 0.5
    assert all(r.confidence == pytest.approx(r.score) for r in results)


def test_reinit_starts_over():
    try:
        peer = create_peer('opencv-kcf')       # deterministic (TrackerMIL is not)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    images, boxes = moving_square(frames=12)
    _follow(peer, images, boxes)
    # start again on the first frame: the peer must follow from the new start, not the old end
    results, ious = _follow(peer, images, boxes)
    assert np.mean(ious > 0.5) >= 0.9


def test_failure_keeps_last_box_and_reports_lost():
    try:
        peer = create_peer('opencv-kcf')
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    images, boxes = moving_square(frames=3)
    peer.init(images[0], BBox.from_sequence(boxes[0]))
    good = peer.update(images[1])
    assert good.found
    lost = peer.update(np.zeros_like(images[2]))     # nothing to correlate with
    assert lost.state == TrackState.LOST and not lost.found
    assert lost.box == good.box and lost.confidence == 0.0


def test_unavailable_and_bad_specs(tmp_path):
    with pytest.raises(PeerUnavailable, match='--peer-model'):
        create_peer('opencv-nano')
    with pytest.raises(PeerUnavailable, match='nanotrack_backbone_sim.onnx'):
        create_peer('opencv-nano', str(tmp_path))
    with pytest.raises(ValueError, match='unknown peer'):
        create_peer('opencv-boosting')
    with pytest.raises(RuntimeError, match='before init'):
        create_peer('opencv-mil').update(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match='cannot start'):
        create_peer('opencv-mil').init(np.zeros((10, 10, 3), np.uint8), BBox(0, 0, 0, 5))
    assert set(PEERS) == {'opencv-nano', 'opencv-mil', 'opencv-csrt', 'opencv-kcf'}


def test_peer_spec_and_rect_rounding():
    assert parse_peer_spec('opencv-mil', '/m/v2') == ('opencv-mil', 'opencv-mil', None)
    with pytest.raises(ValueError, match='takes no model'):
        parse_peer_spec('opencv-kcf@/m/v2')
    assert parse_peer_spec('opencv-nano', '/m/v2') == ('opencv-nano', 'opencv-nano', '/m/v2')
    assert parse_peer_spec(' opencv-nano@/m/nanotrack-v1/ ', '/m/v2') == (
        'opencv-nano@nanotrack-v1', 'opencv-nano', '/m/nanotrack-v1/')
    with pytest.raises(ValueError, match='empty folder'):
        parse_peer_spec('opencv-nano@')
    assert to_cv_rect(BBox(292.23, 128.36, 145.96, 132.47)) == (292, 128, 146, 133)
    assert to_cv_rect(BBox(10.0, 20.0, 0.2, 0.2)) == (10, 20, 1, 1)
