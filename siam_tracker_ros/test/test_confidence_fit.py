"""Fitting the confidence: the logistic fit on known data, and siam-eval --fit-confidence."""
import json

import numpy as np
import pytest

from shared_data import MODELS, need, SHARED
from siam_tracker_ros.cli import siam_eval
from siam_tracker_ros.core.confidence import FEATURES, FEATURES_APPEARANCE
from siam_tracker_ros.eval.confidence_fit import fit_logistic, fit_signed, predict
from siam_tracker_ros.eval.metrics import evaluate_sequence

VAL = SHARED / 'sequences-val'


def _draw(coefficients, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(coefficients) - 1))
    y = rng.random(n) < predict(coefficients, x)
    return x, y


def test_fit_logistic_recovers_the_coefficients_data_was_drawn_with():
    truth = np.array([-0.5, 2.0, -1.0, 0.0])
    x, y = _draw(truth, 20000)
    c = fit_logistic(x, y, l2=0.0)
    np.testing.assert_allclose(c, truth, atol=0.1)
    with pytest.raises(ValueError, match='both kinds'):
        fit_logistic(x, np.ones(len(x), dtype=bool))
    with pytest.raises(ValueError, match=r'need \(N, K\)'):
        fit_logistic(x[:, 0], y)


def test_fit_signed_never_lets_a_cue_count_the_wrong_way():
    # Data where a bigger jump goes with a right box (a tracker stuck on background does not
    # move): the plain fit gives motion a positive weight, the signed fit leaves it out.
    names = ('score', 'sharpness', 'motion')
    x, y = _draw(np.array([0.0, 1.5, 1.0, 0.8]), 20000, seed=1)
    assert fit_logistic(x, y)[3] > 0.5
    c = fit_signed(x, y, names)
    assert c[3] == 0.0 and c[1] > 1.0 and c[2] > 0.5


def test_fit_confidence_end_to_end_on_a_sequence_with_an_out_of_view_gap(tmp_path):
    # uav10_person9 (validation set): the person leaves the view for 12 frames, so both kinds
    # of frames are there.
    need(VAL / 'uav10_person9')
    model = need(MODELS / 'nanotrack-v3')
    fit_out, out = tmp_path / 'fit.json', tmp_path / 'eval.json'
    status = siam_eval.main(['--model', str(model), '--backend', 'onnxruntime',
                             '--sequences', str(VAL), '--seq', 'uav10_person9', '--quiet',
                             '--fit-confidence', str(fit_out), '--json', str(out)])
    assert status == 0
    fit = json.loads(fit_out.read_text())
    assert fit['sequences'] == ['uav10_person9'] and fit['frames'] > 200
    assert 0 < fit['hits'] < fit['frames']
    cheap, full = fit['models']['conf_coefficients'], fit['models']['conf_coefficients_appearance']
    assert cheap['features'] == ['bias', *FEATURES] and len(cheap['coefficients']) == 4
    assert full['features'] == ['bias', *FEATURES_APPEARANCE]
    assert len(full['coefficients']) == 1 + len(FEATURES_APPEARANCE)
    for model_fit in (cheap, full):
        assert 0.0 <= model_fit['brier'] < 0.25 and model_fit['auroc'] > 0.5
    assert fit['set'][0].startswith('conf_coefficients=')
    # The evaluation that follows runs with the fitted coefficients, and says so.
    data = json.loads(out.read_text())
    overrides = data['config']['ours']['overrides']
    assert overrides['conf_coefficients'] == cheap['coefficients']
    assert data['config']['ours']['tracker_config']['conf_coefficients_appearance'] == \
        full['coefficients']
    assert data['trackers']['ours']['mean']['conf_iou_auroc'] is not None


def test_confidence_auroc_for_iou_is_hand_checked():
    gt = np.array([[0, 0, 10, 10]] * 5 + [[np.nan] * 4], dtype=float)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 10, 10],
                     [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    # Scored frames 1..5: hits at 1, 2, 4 (frame 3 misses, frame 5 is absent).
    m = evaluate_sequence(pred, gt, confidence=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    assert list(m.hits) == [True, True, False, True, False]
    # Pairs (hit, miss): (0.9, 0.7) (0.9, 0.5) (0.8, 0.7) (0.8, 0.5) (0.6, 0.7) (0.6, 0.5)
    assert m.conf_iou_auroc == pytest.approx(5 / 6)
    # Frame 3 is off the target, nothing is on it below IoU 0.5: the same ranking on target.
    assert list(m.on_target) == list(m.hits) and m.misplaced_rate == 0.0
    assert m.conf_target_auroc == pytest.approx(5 / 6)
