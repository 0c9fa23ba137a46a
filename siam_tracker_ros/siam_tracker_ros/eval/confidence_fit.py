"""
Fit the tracker's confidence to data: logistic coefficients for P(IoU >= 0.5).

The tracker runs on sequences with ground truth (from the first box and from jittered
starts), measuring every cue of the box it judges on each frame, the appearance included
(``SiameseTracker.record_cues``). The label of a frame is whether that box overlaps the
ground truth with IoU >= 0.5 (0 where the target is absent). Two logistic models are fitted
with Newton's method and a small L2 penalty: one on the cues measured on every frame, one with
the appearance cue too (the tracker measures it on some frames only). ``siam-eval
--fit-confidence OUT`` writes them, with their Brier score and AUROC on the same frames, and
the ``--set`` / ROS parameter lines that use them.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence as Seq, Tuple

import numpy as np

from .metrics import auroc, iou
from .runner import jittered_boxes
from ..core.confidence import FEATURES, FEATURES_APPEARANCE, sigmoid
from ..io.sequences import load_frames, Sequence

# L2 penalty per frame on the coefficients (not the bias): keeps them finite where a cue
# separates the frames perfectly.
L2 = 1e-3


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2,
                 iterations: int = 100) -> np.ndarray:
    """
    Fit ``P(y = 1) = sigmoid(c0 + x . c)`` by Newton's method (IRLS) with an L2 penalty.

    ``x`` is (N, K) features, ``y`` (N,) in {0, 1}; returns the K + 1 coefficients (bias
    first). The bias is not penalised.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f'need (N, K) features and N labels, got {x.shape} and {y.shape}')
    if y.min() == y.max():
        raise ValueError('need frames of both kinds (IoU >= 0.5 and below) to fit')
    a = np.hstack([np.ones((len(x), 1)), x])
    penalty = np.full(a.shape[1], l2 * len(y))
    penalty[0] = 0.0
    c = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = sigmoid(a @ c)
        w = np.maximum(p * (1 - p), 1e-9)
        grad = a.T @ (p - y) + penalty * c
        hess = (a * w[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        c -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return c


# The direction each cue can move the confidence: a cue may be left out of a model (weight 0)
# but never count the wrong way (a bigger jump never makes a box more believable, even where
# the fit data would have it so: a tracker stuck on background does not move).
SIGNS = {'score': 1, 'sharpness': 1, 'motion': -1, 'appearance': 1, 'appearance_change': 1}


def fit_signed(x: np.ndarray, y: np.ndarray, names: Seq[str], l2: float = L2) -> np.ndarray:
    """
    ``fit_logistic`` with each feature's weight kept to the sign ``SIGNS`` gives it.

    Features whose weight comes out with the wrong sign are dropped (weight 0) one at a time,
    the worst first, and the rest refitted.
    """
    keep = list(range(len(names)))
    while True:
        c = fit_logistic(x[:, keep], y, l2)
        wrong = [(SIGNS[names[k]] * c[1 + j], j) for j, k in enumerate(keep)
                 if SIGNS[names[k]] * c[1 + j] < 0]
        if not wrong:
            break
        keep.pop(min(wrong)[1])
    out = np.zeros(len(names) + 1)
    out[0] = c[0]
    out[[1 + k for k in keep]] = c[1:]
    return out


def predict(coefficients: Seq[float], x: np.ndarray) -> np.ndarray:
    """P(IoU >= 0.5) of feature rows ``x`` under ``coefficients`` (bias first)."""
    c = np.asarray(coefficients, dtype=np.float64)
    return sigmoid(c[0] + np.asarray(x, dtype=np.float64) @ c[1:])


def collect(make_tracker: Callable[[], Any], sequences: Seq[Sequence], repeats: int = 1,
            jitter: float = 0.0, progress: Callable[[str], None] = lambda text: None
            ) -> Tuple[List[Dict[str, float]], List[bool]]:
    """
    Run the tracker on every sequence (and jittered starts) recording the judged boxes' cues.

    Returns the feature rows and their labels (IoU >= 0.5 with the ground truth).
    """
    rows: List[Dict[str, float]] = []
    labels: List[bool] = []
    for seq in sequences:
        frames = load_frames(seq)
        for box in jittered_boxes(seq, repeats, jitter):
            tracker = make_tracker()
            tracker.record_cues = True
            tracker.init(frames[0], box)
            for i in range(1, len(frames)):
                tracker.last_cues = None
                tracker.update(frames[i])
                record = tracker.last_cues
                if record is None:
                    continue
                truth = seq.gt[i]
                hit = bool(np.all(np.isfinite(truth))
                           and iou(np.array([record.box.as_tuple()]), truth[None])[0] >= 0.5)
                rows.append(record.features)
                labels.append(hit)
        progress(f'{seq.name}: {len(rows)} frames so far')
        del frames
    return rows, labels


def matrix(rows: Seq[Dict[str, float]], names: Seq[str]) -> np.ndarray:
    """Feature rows as an (N, K) array in ``names`` order."""
    return np.array([[r[n] for n in names] for r in rows], dtype=np.float64).reshape(
        len(rows), len(names))


def fit(rows: Seq[Dict[str, float]], labels: Seq[bool]) -> Dict[str, Any]:
    """Fit both models; return their coefficients and their scores on the same frames."""
    y = np.asarray(labels, dtype=np.float64)
    out: Dict[str, Any] = {'frames': len(y), 'hits': int(y.sum()), 'models': {}}
    with_appearance = [i for i, r in enumerate(rows) if 'appearance' in r]
    for key, names, index in (('conf_coefficients', FEATURES, range(len(rows))),
                              ('conf_coefficients_appearance', FEATURES_APPEARANCE,
                               with_appearance)):
        index = list(index)
        if not index:
            continue
        x = matrix([rows[i] for i in index], names)
        yy = y[index]
        c = fit_signed(x, yy, names)
        p = predict(c, x)
        out['models'][key] = {
            'features': ['bias'] + list(names),
            'coefficients': [round(float(v), 4) for v in c],
            'frames': len(index),
            'brier': float(np.mean((p - yy) ** 2)),
            'auroc': auroc(p, yy.astype(bool)),
        }
    return out


def set_arguments(result: Dict[str, Any]) -> List[str]:
    """Return the ``--set KEY=VALUE`` arguments that apply a fit."""
    return [f'{key}={",".join(str(v) for v in model["coefficients"])}'
            for key, model in result['models'].items()]
