"""Hand-computed checks of the OPE metrics (IoU, AUC, precision, presence, AUROC, hold, ECE)."""
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


def test_held_frames_and_longest_run_by_hand():
    boxes = np.array([[0, 0, 5, 5], [0, 0, 5, 5], [0, 0, 5, 5], [1, 0, 5, 5], [1, 0, 5, 5],
                      NAN4, NAN4, [1, 0, 5, 5]], dtype=float)
    found = [False, False, True, False, False, False, False, False]
    # frame 0: no previous box; 1: same box, lost -> held; 2: found; 3: moved; 4: held;
    # 5, 6: NaN boxes are never equal; 7: the previous box is NaN
    held = M.held_frames(boxes, found)
    assert held.tolist() == [False, True, False, False, True, False, False, False]
    assert M.longest_run(held) == 1
    assert M.longest_run([1, 1, 0, 1, 1, 1, 0]) == 3 and M.longest_run([0, 0]) == 0
    assert M.longest_run([]) == 0
    with pytest.raises(ValueError, match='one value per box'):
        M.held_frames(boxes, found[:3])


def test_calibration_bins_edges_and_pooling_by_hand():
    cal = M.calibration([0.0, 0.1, 0.5, 0.99, 1.0, math.nan, 1.7, -0.2],
                        [0, 1, 1, 1, 0, 1, 1, 0])
    # 0 -> bin 0, 0.1 -> bin 1 (left-closed), 0.5 -> bin 5, 0.99 and 1.0 -> bin 9, NaN left
    # out, 1.7 clipped to 1 -> bin 9, -0.2 clipped to 0 -> bin 0
    assert cal.counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 3]
    assert cal.frames == 7
    np.testing.assert_allclose(cal.edges, np.linspace(0, 1, 11))
    assert cal.hit_rate[9] == pytest.approx(2 / 3) and math.isnan(cal.hit_rate[2])
    assert cal.mean_confidence[9] == pytest.approx((0.99 + 1.0 + 1.0) / 3)
    empty = M.calibration([], [])
    assert empty.frames == 0 and empty.ece is None and empty.brier is None
    pooled = cal + empty
    assert pooled.counts.tolist() == cal.counts.tolist() and pooled.ece == cal.ece
    with pytest.raises(ValueError, match='cannot pool'):
        cal + M.calibration([0.5], [1], bins=5)


def _made_up_run():
    """
    Return a made-up result sequence of 10 frames whose figures are worked out by hand below.

    Frame:      0    1    2    3    4    5    6    7    8    9
    truth:      v    v    v    v    v    v    -    -    v    v      (- = absent, NaN row)
    found:      T    T    F    F    F    T    F    F    T    F
    box x:      0    1    1    1    2    2    2    2    3    3      (y 0, 10x10)
    hit:        .    y    y    n    n    y    .    .    n    y      (IoU 1, or 0: truth moved)
    confidence: 1   .95  .15  .05  .12  .85   .3   .2  .91  .55
    """
    xs = [0, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    boxes = np.array([[x, 0, 10, 10] for x in xs], dtype=float)
    hit = [True, True, True, False, False, True, None, None, False, True]
    gt = np.array([NAN4 if h is None else [x if h else x + 20, 0, 10, 10]
                   for x, h in zip(xs, hit)], dtype=float)
    found = np.array([1, 1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=bool)
    conf = np.array([1.0, 0.95, 0.15, 0.05, 0.12, 0.85, 0.3, 0.2, 0.91, 0.55])
    return boxes, gt, found, conf


def test_false_lost_hold_and_calibration_by_hand():
    boxes, gt, found, conf = _made_up_run()
    m = M.evaluate_sequence(boxes, gt, found, conf)
    # visible frames 1-5, 8, 9 (7); reported not found among them: 2, 3, 4, 9
    assert m.frames_scored == 7 and m.false_lost == 4
    assert m.false_lost_rate == pytest.approx(4 / 7)
    # not found with the box of the frame before: 2, 3, 6, 7, 9 (4 moved); longest run 2
    assert m.held_frames == 5 and m.longest_hold == 2
    # bins: 0.05 -> 0 (miss); 0.15, 0.12 -> 1 (hit, miss); 0.55 -> 5 (hit); 0.85 -> 8 (hit);
    # 0.95, 0.91 -> 9 (hit, miss). Absent frames 6, 7 and the first frame are left out.
    cal = m.calibration
    assert cal.counts.tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 1, 2]
    # ECE = (1 * |0 - .05| + 2 * |.5 - .135| + 1 * |1 - .55| + 1 * |1 - .85|
    #        + 2 * |.5 - .93|) / 7 = (.05 + .73 + .45 + .15 + .86) / 7 = 2.24 / 7
    assert cal.ece == pytest.approx(0.32)
    # Brier = (.05^2 + .85^2 + .05^2 + .12^2 + .15^2 + .91^2 + .45^2) / 7 = 1.795 / 7
    assert cal.brier == pytest.approx(1.795 / 7)
    # a tracker that always reports found (no verdict given) is never falsely lost or held
    peer = M.evaluate_sequence(boxes, gt)
    assert (peer.false_lost, peer.false_lost_rate, peer.held_frames, peer.longest_hold) == (
        0, 0.0, 0, 0)


def test_boxes_on_the_target_below_iou_half_count_as_misplaced_not_off_target():
    gt = np.array([[0, 0, 10, 10]] * 5, dtype=float)
    # Scored frames 1..4: a hit, a box shifted by half its width (IoU 50 / 150 = 1/3, on the
    # target), one shifted by 9 (IoU 10 / 190 < 0.1, off it), a hit.
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10], [9, 0, 10, 10],
                     [0, 0, 10, 10]], dtype=float)
    m = M.evaluate_sequence(pred, gt, confidence=[1.0, 0.9, 0.2, 0.5, 0.8])
    assert list(m.hits) == [True, False, False, True]
    assert list(m.on_target) == [True, True, False, True]
    assert m.misplaced_rate == pytest.approx(1 / 4)
    # Hits (0.9, 0.8) against misses (0.2, 0.5): ranked perfectly. On target (0.9, 0.2, 0.8)
    # against off (0.5): 2 of 3 pairs.
    assert m.conf_iou_auroc == pytest.approx(1.0)
    assert m.conf_target_auroc == pytest.approx(2 / 3)


def test_set_figures_pool_calibration_by_hand():
    from siam_tracker_ros.eval import runner as R
    boxes, gt, found, conf = _made_up_run()

    def record(b, g, f, c):
        run = R.TrackerRun(boxes=b, scores=c, confidences=c, found=f, update_s=1.0,
                           updates=len(b) - 1)
        return R.sequence_record(M.evaluate_sequence(b, g, f, c), run)

    first = record(boxes, gt, found, conf)
    # a second sequence: frames 1, 2 visible and found; confidence .95 (hit), .05 (miss)
    b2 = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    g2 = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [30, 0, 10, 10]], dtype=float)
    second = record(b2, g2, np.ones(3, dtype=bool), np.array([1.0, 0.95, 0.05]))
    assert (second['false_lost'], second['held_frames'], second['ece'], second['brier']) == (
        0, 0, pytest.approx(0.05), pytest.approx(0.0025))
    assert first['false_lost_rate'] == pytest.approx(4 / 7) and first['longest_hold'] == 2
    assert first['calibration']['counts'] == [1, 2, 0, 0, 0, 1, 0, 0, 1, 2]
    rates = first['calibration']['hit_rate']
    assert rates[1] == 0.5 and rates[2] is None             # an empty bin has no hit rate

    mean = R.mean_record({'a': first, 'b': second})
    assert mean['false_lost_rate'] == pytest.approx((4 / 7 + 0) / 2)
    assert (mean['false_lost'], mean['held_frames'], mean['longest_hold']) == (4, 5, 2)
    # pooled bins: 0 gets both .05 misses, 9 gets .95 hit, .91 miss, .95 hit:
    # ECE = (2 * .05 + .73 + .45 + .15 + |2 - 2.81|) / 9 = 2.24 / 9
    assert mean['calibration']['counts'] == [2, 2, 0, 0, 0, 1, 0, 0, 1, 3]
    assert mean['ece'] == pytest.approx(2.24 / 9)
    # Brier = (1.795 + .0025 + .0025) / 9 = 0.2
    assert mean['brier'] == pytest.approx(0.2)
    # Every visible box either hits or misses the target entirely in both sequences.
    assert first['misplaced_rate'] == 0.0 and mean['misplaced_rate'] == 0.0

    table = R.format_table({'x': {'mean': mean, 'sequences': {}}}, reference=None)
    header, _, row = table.splitlines()
    assert 'false_LOST' in header and 'held(longest)' in header and 'Brier' in header
    assert header.split()[-2:] == ['misplaced', 'AUROC(on)'] and row.split()[-2] == '0.0%'
    assert '28.6%' in row and '5 (2)' in row and '0.249' in row and '0.200' in row


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
