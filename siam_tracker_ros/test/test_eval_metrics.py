"""Hand-computed checks of the OPE metrics (IoU, success AUC, precision, presence, AUROC)."""
import math
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from siam_tracker_ros.eval import metrics as M

NAN4 = [math.nan] * 4


def test_iou_by_hand():
    gt = np.array([[0, 0, 10, 10]] * 5, dtype=float)
    pred = np.array([
        [0, 0, 10, 10],     # identical: 1
        [5, 0, 10, 10],     # overlap 5x10=50, union 150: 1/3
        [5, 5, 10, 10],     # overlap 5x5=25, union 175: 1/7
        [20, 20, 5, 5],     # disjoint: 0
        [2, 2, 4, 4],       # inside: 16/100
    ], dtype=float)
    np.testing.assert_allclose(M.iou(pred, gt), [1.0, 1 / 3, 1 / 7, 0.0, 0.16])


def test_iou_touching_degenerate_and_nan():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], NAN4], dtype=float)
    pred = np.array([[10, 0, 10, 10], [0, 0, 0, 0], NAN4, [0, 0, 10, 10]], dtype=float)
    out = M.iou(pred, gt)
    assert out[0] == 0.0          # edges touch, no area in common
    assert out[1] == 0.0          # empty prediction
    assert out[2] == 0.0          # no prediction at all
    assert math.isnan(out[3])     # target absent: not scored


def test_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match='N, 4'):
        M.iou(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match='2 boxes'):
        M.iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_success_curve_and_auc_by_hand():
    ious = np.array([0.0, 0.25, 0.5, 1.0])
    curve = M.success_curve(ious)
    assert curve.shape == (21,)
    # t=0: IoU > 0 for 3 of 4; t in (0, .25): 3/4 (0.05, 0.1, 0.15, 0.2);
    # t = .25: strictly greater -> 2/4; t in (.25,.5]: 2/4 up to .45, at .5 -> 1/4;
    # t in (.5, 1): 1/4; t = 1: 0.
    expected = np.array([0.75] * 5 + [0.5] * 5 + [0.25] * 10 + [0.0])
    np.testing.assert_allclose(curve, expected)
    # AUC = (5*.75 + 5*.5 + 10*.25) / 21 = 8.75 / 21
    assert M.curve_auc(curve) == pytest.approx(8.75 / 21)


def test_precision_at_20_and_centres():
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)        # centre (5, 5)
    pred = np.array([
        [0, 0, 10, 10],      # distance 0
        [12, 16, 10, 10],    # centre (17, 21): 12, 16 -> 20 (counts: <= 20)
        [15, 15, 12, 12],    # centre (21, 21): 16, 16 -> 22.63
        [3, 4, 4, 2],        # centre (5, 5): 0, other size
    ], dtype=float)
    err = M.center_error(pred, gt)
    np.testing.assert_allclose(err, [0, 20, math.hypot(16, 16), 0])
    assert M.precision_curve(err, [20.0])[0] == pytest.approx(0.75)
    curve = M.precision_curve(err)
    assert curve.shape == (51,)
    assert curve[0] == 0.5 and curve[19] == 0.5 and curve[20] == 0.75 and curve[23] == 1.0


def test_normalized_precision_by_hand():
    gt = np.array([[0, 0, 10, 20]] * 2 + [NAN4], dtype=float)   # centre (5, 10)
    pred = np.array([
        [3, 4, 10, 20],      # centre (8, 14): (3/10, 4/20) -> hypot(.3, .2) = .3606
        [0, 0, 10, 20],      # 0
        [0, 0, 10, 20],      # gt absent -> NaN, left out
    ], dtype=float)
    err = M.normalized_center_error(pred, gt)
    assert err[0] == pytest.approx(math.hypot(0.3, 0.2))
    assert err[1] == 0.0 and math.isnan(err[2])
    curve = M.precision_curve(err, M.NORM_PRECISION_THRESHOLDS)
    # thresholds 0, .01, ..., .5: frame 2 always in (1/2); frame 1 in from .37 on (14 of 51)
    expected = np.where(M.NORM_PRECISION_THRESHOLDS >= math.hypot(0.3, 0.2), 1.0, 0.5)
    np.testing.assert_allclose(curve, expected)
    assert M.curve_auc(curve) == pytest.approx((37 * 0.5 + 14 * 1.0) / 51)


def test_presence_scores_by_hand():
    present = [1, 1, 1, 1, 0, 0, 0]
    found = [1, 1, 1, 0, 1, 0, 0]
    # TP 3, FN 1, FP 1: precision 3/4, recall 3/4, F1 3/4
    p, r, f1 = M.presence_scores(present, found)
    assert (p, r, f1) == pytest.approx((0.75, 0.75, 0.75))
    present = [1, 1, 0, 0]
    found = [1, 1, 1, 1]
    # TP 2, FP 2, FN 0: precision 1/2, recall 1, F1 = 2*.5*1/1.5 = 2/3
    assert M.presence_scores(present, found) == pytest.approx((0.5, 1.0, 2 / 3))
    assert M.presence_scores([1, 0], [0, 0]) == (0.0, 0.0, 0.0)


def test_auroc_by_hand_with_ties():
    # positives 0.9, 0.8, 0.4; negatives 0.8, 0.3
    # pairs (pos > neg): .9>.8 1, .9>.3 1, .8=.8 .5, .8>.3 1, .4<.8 0, .4>.3 1 -> 4.5 / 6
    scores = [0.9, 0.8, 0.4, 0.8, 0.3]
    labels = [1, 1, 1, 0, 0]
    assert M.auroc(scores, labels) == pytest.approx(0.75)
    assert M.auroc([0.1, 0.2], [0, 1]) == 1.0
    assert M.auroc([0.1, 0.2], [1, 0]) == 0.0
    assert math.isnan(M.auroc([0.1, 0.2], [1, 1]))
    # a NaN score is left out: as if only (0.9 pos, 0.3 neg)
    assert M.auroc([0.9, math.nan, 0.3], [1, 1, 0]) == 1.0
    np.testing.assert_allclose(M.average_ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1, 3.5, 2])


def test_evaluate_sequence_skips_first_frame_and_absent_frames():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], NAN4, [0, 0, 10, 10], NAN4], dtype=float)
    pred = np.array([[50, 50, 1, 1],     # init frame: left out even though it is wrong
                     [0, 0, 10, 10],     # IoU 1, found
                     [0, 0, 10, 10],     # absent, found -> false positive
                     [5, 0, 10, 10],     # IoU 1/3, lost -> false negative
                     [0, 0, 10, 10]],    # absent, lost -> true negative
                    dtype=float)
    found = [True, True, True, False, False]
    conf = [1.0, 0.9, 0.6, 0.4, 0.1]
    m = M.evaluate_sequence(pred, gt, found, conf)
    assert m.frames == 5 and m.frames_scored == 2 and m.lost_frames == 2
    np.testing.assert_allclose(m.ious[[0, 2]], [1.0, 1 / 3])
    assert m.auc == pytest.approx(M.curve_auc(M.success_curve([1.0, 1 / 3])))
    assert m.prec20 == 1.0
    assert m.mean_iou == pytest.approx(2 / 3)
    # presence over frames 1..4: TP 1 (frame 1), FP 1 (frame 2), FN 1 (frame 3)
    assert (m.presence_precision, m.presence_recall, m.presence_f1) == pytest.approx(
        (0.5, 0.5, 0.5))
    # AUROC: visible .9, .4 vs absent .6, .1 -> pairs won: .9>.6, .9>.1, .4>.1 = 3 of 4
    assert m.conf_auroc == pytest.approx(0.75)


def test_evaluate_sequence_without_absent_frames_has_no_presence():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    m = M.evaluate_sequence(gt.copy(), gt)
    assert m.auc == pytest.approx(20 / 21)     # IoU 1 beats every threshold but 1.0
    assert m.presence_f1 is None and m.conf_auroc is None


def test_eval_package_imports_no_torch_rclpy_onnx():
    code = ('import sys\n'
            'import siam_tracker_ros.eval.metrics, siam_tracker_ros.io.sequences\n'
            'import siam_tracker_ros.eval.peers, siam_tracker_ros.eval.runner\n'
            'import siam_tracker_ros.eval.plots\n'
            'bad = [m for m in ("torch", "rclpy", "onnx", "onnxruntime", "tensorrt",\n'
            '       "matplotlib") if m in sys.modules]\n'
            'print(",".join(bad))\n')
    import siam_tracker_ros.eval
    pkg_root = Path(siam_tracker_ros.eval.__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=str(pkg_root), check=True)
    assert out.stdout.strip() == ''
