"""Crop, decode and selection against hand-computed values."""
import math

import cv2
import numpy as np
import pytest

from siam_tracker_ros.core.crop import context_size, crop_window, to_blob, window_origin
from siam_tracker_ros.core.decode import (anchor_boxes, AnchorDecoder, AnchorFreeDecoder,
                                          Candidates, cosine_window, foreground_margin,
                                          foreground_probability,
                                          point_grid, select_candidate)
from siam_tracker_ros.core.manifest import AnchorSpec
from siam_tracker_ros.core.types import BBox


def ramp_image(h=60, w=80):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], axis=2).astype(np.uint8)


def test_window_origin_matches_upstream_rounding():
    # floor(c - (s + 1) / 2 + 0.5): centre 10, size 5 -> floor(7.5) = 7
    assert window_origin(10.0, 5) == 7
    assert window_origin(10.0, 4) == 8      # floor(10 - 2.5 + 0.5) = 8
    assert window_origin(-3.2, 3) == -5     # floor(-3.2 - 2 + 0.5) = floor(-4.7)


def test_crop_without_resize_is_the_exact_slice():
    img = ramp_image()
    crop = crop_window(img, (40.0, 30.0), 21, 21, (0, 0, 0))
    x0 = window_origin(40.0, 21)
    y0 = window_origin(30.0, 21)
    assert (x0, y0) == (29, 19)             # floor(40 - 11 + 0.5), floor(30 - 11 + 0.5)
    np.testing.assert_array_equal(crop, img[19:40, 29:50])


def test_crop_inside_the_frame_is_upstreams_slice_then_resize():
    img = cv2.GaussianBlur(ramp_image(120, 160), (0, 0), 2)
    crop = crop_window(img, (80.0, 60.0), 64, 40, (0, 0, 0))
    x0, y0 = window_origin(80.0, 64), window_origin(60.0, 64)
    ref = cv2.resize(img[y0:y0 + 64, x0:x0 + 64], (40, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, ref)


def test_crop_leaving_the_frame_matches_pad_then_resize():
    img = cv2.GaussianBlur(ramp_image(120, 160), (0, 0), 2)
    pad = (50, 60, 70)
    crop = crop_window(img, (150.0, 20.0), 64, 40, pad)
    x0, y0 = window_origin(150.0, 64), window_origin(20.0, 64)
    padded = cv2.copyMakeBorder(img, 64, 64, 64, 64, cv2.BORDER_CONSTANT, value=pad)
    window = padded[y0 + 64:y0 + 128, x0 + 64:x0 + 128]
    ref = cv2.resize(window, (40, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, ref)     # upstream's pad-the-frame way, bit for bit


def test_crop_that_misses_the_frame_is_all_padding():
    crop = crop_window(ramp_image(), (-500.0, 30.0), 21, 15, (1, 2, 3))
    assert crop.shape == (15, 15, 3) and (crop == (1, 2, 3)).all()


def test_crop_pads_outside_with_the_given_colour():
    img = ramp_image()
    crop = crop_window(img, (0.0, 0.0), 21, 21, (11, 22, 33))
    # window starts at floor(0 - 11 + 0.5) = -11: crop rows/cols 0..10 lie outside the image
    assert (crop[:11, :] == (11, 22, 33)).all() and (crop[:, :11] == (11, 22, 33)).all()
    np.testing.assert_array_equal(crop[11:, 11:], img[0:10, 0:10])


def test_to_blob_layout():
    crop = ramp_image(5, 7)
    blob = to_blob(crop)
    assert blob.shape == (1, 3, 5, 7) and blob.dtype == np.float32
    assert blob[0, 2, 4, 6] == crop[4, 6, 2]


def test_context_size():
    # w=100, h=50, amount 0.5: pad 75 -> sqrt(175 * 125)
    assert context_size(100, 50, 0.5) == pytest.approx(math.sqrt(175 * 125))


def test_point_grid_even_is_half_a_cell_off_and_odd_is_centred():
    xs, ys = point_grid(16, 16)
    assert xs[0] == -128 and xs[15] == 112 and ys[16] == -112
    xs, ys = point_grid(15, 16)
    assert xs[0] == -112 and xs[14] == 112
    assert len(xs) == 225


def test_cosine_window_peaks_at_the_centre_cell():
    w = cosine_window(15)
    assert w.argmax() == 7 * 15 + 7
    assert cosine_window(15, 5).shape == (225 * 5,)


def test_foreground_probability_softmax():
    cls = np.zeros((1, 2, 1, 2), np.float32)
    cls[0, 1, 0, 0] = math.log(3.0)    # fg logit: p = 3 / (1 + 3)
    cls[0, 0, 0, 1] = 20.0              # bg logit 20 above fg: p = e^-20, margin -20
    margins = foreground_margin(cls)
    np.testing.assert_allclose(margins, [math.log(3.0), -20.0], rtol=1e-6)
    p = foreground_probability(margins)
    np.testing.assert_allclose(p, [0.75, math.exp(-20.0) / (1 + math.exp(-20.0))], rtol=1e-5)


def _cands(scores, boxes, window) -> Candidates:
    """Candidates with the logit margins their scores are the sigmoid of."""
    scores = np.asarray(scores, dtype=float)
    return Candidates(scores, boxes, window, np.log(scores / (1.0 - scores)))


def test_anchor_free_decode_by_hand():
    dec = AnchorFreeDecoder(16)
    cls = np.zeros((1, 2, 15, 15), np.float32)
    reg = np.zeros((1, 4, 15, 15), np.float32)
    reg[0, 0], reg[0, 1], reg[0, 2], reg[0, 3] = 10, 20, 30, 40   # l, t, r, b
    c = dec.decode(cls, reg)
    centre = 7 * 15 + 7                      # the point at (0, 0)
    np.testing.assert_allclose(c.boxes[:, centre], [10, 10, 40, 60])
    np.testing.assert_allclose(c.boxes[:, 0], [-112 + 10, -112 + 10, 40, 60])


def test_anchor_boxes_follow_pysot():
    a = anchor_boxes(5, 8, (0.33, 0.5, 1.0, 2.0, 3.0), (8.0,))
    assert a.shape == (4, 5 * 25)
    # ratio 0.33: ws = int(sqrt(64 / 0.33)) = 13, hs = int(13 * 0.33) = 4 -> 104 x 32
    np.testing.assert_allclose(a[:, 0], [-16, -16, 104, 32])
    # ratio 1 (third anchor), centre cell: 64 x 64 at (0, 0)
    np.testing.assert_allclose(a[:, 2 * 25 + 12], [0, 0, 64, 64])


def test_anchor_decode_by_hand():
    dec = AnchorDecoder(8, AnchorSpec((1.0,), (8.0,)))
    cls = np.zeros((1, 2, 3, 3), np.float32)
    reg = np.zeros((1, 4, 3, 3), np.float32)
    reg[0, 0, 1, 1] = 0.5                    # dx * anchor w
    reg[0, 2, 1, 1] = math.log(2.0)          # w * 2
    c = dec.decode(cls, reg)
    np.testing.assert_allclose(c.boxes[:, 4], [32, 0, 128, 64], rtol=1e-6)
    with pytest.raises(ValueError, match='anchors'):
        dec.decode(np.zeros((1, 4, 3, 3)), reg)


def test_select_candidate_penalty_by_hand():
    scores = np.array([0.9, 0.9])
    boxes = np.array([[0, 0], [0, 0], [100, 200], [100, 200]], dtype=float)
    cands = _cands(scores, boxes, np.zeros(2))
    pick = select_candidate(cands, 100.0, 100.0, penalty_k=0.2, window_influence=0.0)
    # same size: no penalty; double size: padded size 400 vs 200 -> s_c = 2, r_c = 1
    assert pick.index == 0 and pick.penalty == pytest.approx(1.0)
    np.testing.assert_allclose(pick.pscore, [0.9, 0.9 * math.exp(-0.2)])


def test_select_candidate_window_influence():
    cands = _cands([0.5, 0.6], np.full((4, 2), 50.0), np.array([1.0, 0.0]))
    assert select_candidate(cands, 50, 50, 0.0, 0.0).index == 1
    assert select_candidate(cands, 50, 50, 0.0, 0.5).index == 0


def test_bbox_validation_messages():
    assert BBox(1, 2, 3, 4).validation_error(10, 10) == ''
    assert 'NaN' in BBox(float('nan'), 0, 3, 3).validation_error(10, 10)
    assert 'zero' in BBox(1, 1, 0, 3).validation_error(10, 10)
    assert 'outside' in BBox(20, 1, 3, 3).validation_error(10, 10)
    assert BBox.from_center(10, 20, 4, 6).as_tuple() == (8, 17, 4, 6)


def test_select_candidate_never_picks_an_overflowing_box():
    boxes = np.array([[0, 0], [0, 0], [np.inf, 40], [50, 40]], dtype=float)
    cands = _cands([0.99, 0.1], boxes, np.array([1.0, 0.0]))
    assert select_candidate(cands, 40, 40, 0.1, 0.5).index == 1
