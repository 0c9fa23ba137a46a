"""
One-pass evaluation (OPE) metrics in the OTB / GOT-10k / LaSOT conventions, pure numpy.

Boxes are ``(N, 4)`` arrays of float (x, y, w, h), 0-based pixels. A ground-truth row of NaN
means the target is absent; such frames are left out of the overlap and centre-error metrics
and are what the presence metrics (precision / recall / F1 of the tracker's found verdict,
AUROC of its confidence) are about.

- success: fraction of frames whose IoU is *greater than* each of 21 thresholds
  ``linspace(0, 1, 21)``; AUC is the mean of that curve (OTB, GOT-10k);
- precision: fraction of frames whose centre error is *at most* each threshold 0..50 px;
  ``prec20`` is the value at 20 px (OTB);
- normalised precision: centre error divided by the ground-truth width / height per axis,
  curve over ``linspace(0, 0.5, 51)``; ``norm_prec`` is the mean of that curve (LaSOT);
- false LOST: visible frames on which the tracker reports the target not found;
- held: frames on which the tracker reports not found and publishes exactly the previous
  frame's box (the long-term hold), and the longest run of such frames;
- calibration: the confidence on visible frames against the event IoU >= 0.5, in 10
  equal-width bins over [0, 1] (reliability diagram), with the expected calibration error
  ``ECE = sum_b n_b / N * |hit rate_b - mean confidence_b|`` and the Brier score
  ``mean((confidence - hit) ** 2)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_PRECISION_THRESHOLDS = np.linspace(0.0, 0.5, 51)
PRECISION_AT = 20.0
CALIBRATION_BINS = 10
HIT_IOU = 0.5
# A box that overlaps the truth by more than this is on the target: below HIT_IOU it is on the
# right target but mis-placed or mis-sized, a miss no presence cue can tell from a hit.
ON_TARGET_IOU = 0.1


def _boxes(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f'{name} must be an (N, 4) array of x, y, w, h; got shape {arr.shape}')
    return arr


def _pair(pred, gt) -> Tuple[np.ndarray, np.ndarray]:
    pred, gt = _boxes(pred, 'pred'), _boxes(gt, 'gt')
    if pred.shape != gt.shape:
        raise ValueError(f'pred has {len(pred)} boxes but gt has {len(gt)}')
    return pred, gt


def iou(pred, gt) -> np.ndarray:
    """
    Per-frame intersection over union of ``(N, 4)`` x, y, w, h boxes.

    A predicted box with a NaN coordinate or no area scores 0; NaN ground-truth rows give NaN.
    """
    pred, gt = _pair(pred, gt)
    px1, py1 = pred[:, 0], pred[:, 1]
    px2, py2 = px1 + pred[:, 2], py1 + pred[:, 3]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    with np.errstate(invalid='ignore'):
        iw = np.clip(np.minimum(px2, gx2) - np.maximum(px1, gx1), 0.0, None)
        ih = np.clip(np.minimum(py2, gy2) - np.maximum(py1, gy1), 0.0, None)
        inter = iw * ih
        union = (np.clip(pred[:, 2], 0, None) * np.clip(pred[:, 3], 0, None)
                 + np.clip(gt[:, 2], 0, None) * np.clip(gt[:, 3], 0, None) - inter)
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    out[np.isnan(pred).any(axis=1)] = 0.0
    out[np.isnan(gt).any(axis=1)] = np.nan
    return out


def centers(boxes) -> np.ndarray:
    """Box centres ``(x + w / 2, y + h / 2)`` as an ``(N, 2)`` array."""
    b = _boxes(boxes, 'boxes')
    return b[:, :2] + b[:, 2:] / 2.0


def center_error(pred, gt) -> np.ndarray:
    """
    Per-frame Euclidean distance between box centres in pixels.

    A NaN predicted box counts as infinitely far; NaN ground-truth rows give NaN.
    """
    pred, gt = _pair(pred, gt)
    err = np.linalg.norm(centers(pred) - centers(gt), axis=1)
    err[np.isnan(pred).any(axis=1)] = np.inf
    err[np.isnan(gt).any(axis=1)] = np.nan
    return err


def normalized_center_error(pred, gt) -> np.ndarray:
    """
    Per-frame centre error with each axis divided by the ground-truth size (LaSOT).

    A NaN predicted box counts as infinitely far; NaN ground-truth rows give NaN.
    """
    pred, gt = _pair(pred, gt)
    size = gt[:, 2:].copy()
    with np.errstate(invalid='ignore'):
        size[~(size > 0)] = np.nan
        err = np.linalg.norm((centers(pred) - centers(gt)) / size, axis=1)
    err[np.isnan(pred).any(axis=1)] = np.inf
    err[np.isnan(gt).any(axis=1)] = np.nan
    return err


def success_curve(ious, thresholds=SUCCESS_THRESHOLDS) -> np.ndarray:
    """Fraction of frames with IoU strictly above each threshold (NaN IoUs are left out)."""
    v = np.asarray(ious, dtype=np.float64)
    v = v[~np.isnan(v)]
    thr = np.asarray(thresholds, dtype=np.float64)
    if v.size == 0:
        return np.full(thr.shape, np.nan)
    return (v[None, :] > thr[:, None]).mean(axis=1)


def precision_curve(errors, thresholds=PRECISION_THRESHOLDS) -> np.ndarray:
    """Fraction of frames with error at most each threshold (NaN errors are left out)."""
    v = np.asarray(errors, dtype=np.float64)
    v = v[~np.isnan(v)]
    thr = np.asarray(thresholds, dtype=np.float64)
    if v.size == 0:
        return np.full(thr.shape, np.nan)
    return (v[None, :] <= thr[:, None]).mean(axis=1)


def curve_auc(curve) -> float:
    """Area under a curve sampled on evenly spaced thresholds: the mean of its values."""
    c = np.asarray(curve, dtype=np.float64)
    return float(c.mean()) if c.size else float('nan')


def presence_scores(present, predicted) -> Tuple[float, float, float]:
    """
    Precision, recall and F1 of a 'target present' verdict against the truth.

    Positive means 'target present'. A ratio with a zero denominator is 0.
    """
    t = np.asarray(present, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f'present has shape {t.shape} but predicted has {p.shape}')
    tp = float(np.sum(t & p))
    fp = float(np.sum(~t & p))
    fn = float(np.sum(t & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def average_ranks(values) -> np.ndarray:
    """1-based ranks of ``values`` with tied values given the mean of their ranks."""
    v = np.asarray(values, dtype=np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    return mean_rank[inverse.reshape(-1)]


def auroc(scores, labels) -> float:
    """
    Area under the ROC curve of ``scores`` separating positive from negative ``labels``.

    Rank based (Mann-Whitney U, ties count one half). Frames with a non-finite score are left
    out; NaN when either class is empty.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f'scores has {s.size} values but labels has {y.size}')
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    ranks = average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def held_frames(boxes, found) -> np.ndarray:
    """
    Per-frame mask of held boxes: not found, and exactly the previous frame's box.

    The first frame has no previous box and is never held; a box with a NaN coordinate is
    never equal to anything.
    """
    b = _boxes(boxes, 'boxes')
    f = np.asarray(found, dtype=bool)
    if f.shape != (len(b),):
        raise ValueError(f'found needs one value per box ({len(b)}), got shape {f.shape}')
    held = np.zeros(len(b), dtype=bool)
    held[1:] = ~f[1:] & np.all(b[1:] == b[:-1], axis=1)
    return held


def longest_run(mask) -> int:
    """Length of the longest run of consecutive True values (0 when there is none)."""
    m = np.concatenate(([False], np.asarray(mask, dtype=bool).reshape(-1), [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])          # run starts and ends, alternating
    return int((edges[1::2] - edges[0::2]).max()) if edges.size else 0


@dataclass(frozen=True, eq=False)
class Calibration:
    """
    Confidence against hits in ``len(counts)`` equal-width bins over [0, 1].

    Per bin: the number of frames, the sum of their confidences and their hits; plus the sum
    of squared errors ``(confidence - hit) ** 2`` over all frames. Sums, so the calibration
    of a set of sequences is the ``+`` of theirs.
    """

    counts: np.ndarray
    confidence_sum: np.ndarray
    hits: np.ndarray
    squared_error_sum: float

    @property
    def frames(self) -> int:
        """Frames counted."""
        return int(self.counts.sum())

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``len(counts) + 1`` values from 0 to 1."""
        return np.linspace(0.0, 1.0, len(self.counts) + 1)

    def _per_bin(self, sums: np.ndarray) -> np.ndarray:
        return np.where(self.counts > 0, sums / np.maximum(self.counts, 1), np.nan)

    @property
    def mean_confidence(self) -> np.ndarray:
        """Mean confidence per bin (NaN for an empty bin)."""
        return self._per_bin(self.confidence_sum)

    @property
    def hit_rate(self) -> np.ndarray:
        """Observed frequency of hits per bin (NaN for an empty bin)."""
        return self._per_bin(self.hits)

    @property
    def ece(self) -> Optional[float]:
        """Return the expected calibration error (None without frames)."""
        if self.frames == 0:
            return None
        gap = np.abs(self.hits - self.confidence_sum)     # = n_b * |hit rate - mean conf|
        return float(gap.sum() / self.frames)

    @property
    def brier(self) -> Optional[float]:
        """Brier score: mean squared error of the confidence as P(hit) (None without frames)."""
        return float(self.squared_error_sum / self.frames) if self.frames else None

    def __add__(self, other: 'Calibration') -> 'Calibration':
        """Pool the frames of two calibrations (same bins)."""
        if len(self.counts) != len(other.counts):
            raise ValueError(f'cannot pool {len(self.counts)} bins with {len(other.counts)}')
        return Calibration(self.counts + other.counts,
                           self.confidence_sum + other.confidence_sum,
                           self.hits + other.hits,
                           self.squared_error_sum + other.squared_error_sum)


def calibration(confidence, hits, bins: int = CALIBRATION_BINS) -> Calibration:
    """
    Bin ``confidence`` (clipped to [0, 1]) against boolean ``hits``.

    Bins are ``[k / bins, (k + 1) / bins)``, the last one closed at 1. Frames with a
    non-finite confidence are left out.
    """
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    h = np.asarray(hits, dtype=bool).reshape(-1)
    if c.shape != h.shape:
        raise ValueError(f'confidence has {c.size} values but hits has {h.size}')
    if bins < 1:
        raise ValueError(f'bins must be >= 1, got {bins}')
    keep = np.isfinite(c)
    c, h = np.clip(c[keep], 0.0, 1.0), h[keep].astype(np.float64)
    index = np.minimum((c * bins).astype(int), bins - 1)
    return Calibration(
        counts=np.bincount(index, minlength=bins).astype(np.int64),
        confidence_sum=np.bincount(index, weights=c, minlength=bins),
        hits=np.bincount(index, weights=h, minlength=bins),
        squared_error_sum=float(np.sum((c - h) ** 2)),
    )


@dataclass(frozen=True, eq=False)
class SequenceMetrics:
    """
    Metrics of one tracker on one sequence (first frame excluded).

    The presence fields are None when the ground truth has no absent frame; ``conf_auroc``
    is None unless both visible and absent frames exist. ``false_lost`` counts the visible
    frames reported not found (``false_lost_rate``: over visible frames, None without any);
    ``held_frames`` the frames whose box is held (see held_frames), ``longest_hold`` the
    longest run of them; ``calibration`` bins the confidence of visible frames against
    IoU >= 0.5. ``hits`` marks the scored frames whose box has IoU >= 0.5 (absent frames are
    misses), ``confidences`` holds their confidence and ``conf_iou_auroc`` the AUROC of the
    one for the other (None with a single class). ``on_target`` marks the scored frames whose
    box has IoU > ON_TARGET_IOU and ``conf_target_auroc`` ranks them by the confidence (how
    well it tells the target from something else, whatever the box's fit);
    ``misplaced_rate`` is the share of visible frames on the target but below HIT_IOU (the
    misses that only a box-quality cue could rank; None without a visible frame).
    """

    frames: int
    frames_scored: int
    ious: np.ndarray
    center_errors: np.ndarray
    success: np.ndarray
    precision: np.ndarray
    norm_precision: np.ndarray
    auc: float
    prec20: float
    norm_prec: float
    mean_iou: float
    lost_frames: int
    presence_precision: Optional[float]
    presence_recall: Optional[float]
    presence_f1: Optional[float]
    conf_auroc: Optional[float]
    false_lost: int
    false_lost_rate: Optional[float]
    held_frames: int
    longest_hold: int
    calibration: Calibration
    hits: np.ndarray
    confidences: np.ndarray
    conf_iou_auroc: Optional[float]
    on_target: np.ndarray
    conf_target_auroc: Optional[float]
    misplaced_rate: Optional[float]


def evaluate_sequence(pred, gt, found=None, confidence=None,
                      skip_first: bool = True) -> SequenceMetrics:
    """
    Score predicted boxes against ground truth, leaving out the initialisation frame.

    ``found`` (bool per frame, the tracker's own verdict) and ``confidence`` (float per frame)
    feed the presence metrics; without them every frame counts as 'found'.
    """
    pred, gt = _pair(pred, gt)
    n = len(gt)
    found_arr = np.ones(n, dtype=bool) if found is None else np.asarray(found, dtype=bool)
    conf_arr = (found_arr.astype(np.float64) if confidence is None
                else np.asarray(confidence, dtype=np.float64))
    if found_arr.shape != (n,) or conf_arr.shape != (n,):
        raise ValueError(f'found and confidence need one value per frame ({n})')
    start = 1 if skip_first else 0
    held = held_frames(pred, found_arr)[start:]
    pred, gt = pred[start:], gt[start:]
    found_arr, conf_arr = found_arr[start:], conf_arr[start:]

    ious = iou(pred, gt)
    errors = center_error(pred, gt)
    success = success_curve(ious)
    precision = precision_curve(errors)
    norm_precision = precision_curve(normalized_center_error(pred, gt),
                                     NORM_PRECISION_THRESHOLDS)
    visible = ~np.isnan(gt).any(axis=1)
    prec20 = precision_curve(errors, [PRECISION_AT])[0]

    p = r = f1 = roc = None
    if not visible.all():
        p, r, f1 = presence_scores(visible, found_arr)
        roc_value = auroc(conf_arr, visible)
        roc = None if np.isnan(roc_value) else roc_value
    false_lost = int(np.sum(visible & ~found_arr))
    n_visible = int(visible.sum())
    overlap = np.nan_to_num(ious, nan=0.0)
    hits = np.where(visible, overlap >= HIT_IOU, False)
    hit_roc = auroc(conf_arr, hits)
    on_target = visible & (overlap > ON_TARGET_IOU)
    target_roc = auroc(conf_arr, on_target)
    return SequenceMetrics(
        frames=n,
        frames_scored=n_visible,
        ious=ious,
        center_errors=errors,
        success=success,
        precision=precision,
        norm_precision=norm_precision,
        auc=curve_auc(success),
        prec20=float(prec20),
        norm_prec=curve_auc(norm_precision),
        mean_iou=float(np.nanmean(ious)) if visible.any() else float('nan'),
        lost_frames=int((~found_arr).sum()),
        presence_precision=p,
        presence_recall=r,
        presence_f1=f1,
        conf_auroc=roc,
        false_lost=false_lost,
        false_lost_rate=false_lost / n_visible if n_visible else None,
        held_frames=int(held.sum()),
        longest_hold=longest_run(held),
        calibration=calibration(conf_arr[visible], ious[visible] >= HIT_IOU),
        hits=hits,
        confidences=conf_arr,
        conf_iou_auroc=None if np.isnan(hit_roc) else hit_roc,
        on_target=on_target,
        conf_target_auroc=None if np.isnan(target_roc) else target_roc,
        misplaced_rate=(int(np.sum(on_target & ~hits)) / n_visible if n_visible else None),
    )


def timing_stats(values_ms) -> Dict[str, float]:
    """p50 / p90 / p99 / mean / count of a list of durations in ms (NaN when empty)."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return {'p50': float('nan'), 'p90': float('nan'), 'p99': float('nan'),
                'mean': float('nan'), 'n': 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {'p50': float(p50), 'p90': float(p90), 'p99': float(p99), 'mean': float(arr.mean()),
            'n': int(arr.size)}
