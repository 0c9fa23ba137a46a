"""
Run trackers over sequences (one-pass evaluation) and collect JSON-ready results.

Every frame of a sequence is decoded once; all trackers then run on the same decoded frames in
this process, one after the other. Each tracker starts on the first frame from its ground-truth
box; only ``update()`` is timed (``time.perf_counter``), so decoding is not part of frames/s.
"""
from __future__ import annotations

from dataclasses import dataclass
import gc
import math
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence as Seq, TextIO
import zlib

import numpy as np

from siam_tracker_ros.core.types import BBox, TrackResult
from siam_tracker_ros.eval.longterm_set import event_scores, events_summary, sequence_events
from siam_tracker_ros.eval.metrics import (
    auroc, Calibration, calibration, CALIBRATION_BINS, evaluate_sequence,
    NORM_PRECISION_THRESHOLDS, PRECISION_THRESHOLDS, SequenceMetrics, SUCCESS_THRESHOLDS)
from siam_tracker_ros.io.sequences import load_frames, Sequence

OURS = 'ours'


@dataclass(frozen=True)
class TrackerEntry:
    """
    A tracker to evaluate: its name and a callable giving a tracker ready for ``init``.

    ``make`` is called once per sequence; it may return a fresh tracker or the same one
    (``init`` must then forget the previous target).
    """

    name: str
    make: Callable[[], Any]


@dataclass(frozen=True, eq=False)
class TrackerRun:
    """What one tracker reported on every frame of one sequence (frame 0 = the init box)."""

    boxes: np.ndarray
    scores: np.ndarray
    confidences: np.ndarray
    found: np.ndarray
    update_s: float
    updates: int

    @property
    def fps(self) -> float:
        """Frames per second of ``update()`` alone."""
        return self.updates / self.update_s if self.update_s > 0 else float('nan')


class Progress:
    """
    A small progress display on a text stream (stderr by default).

    On a terminal it redraws one line (sequence, tracker, frame i/N) at most every 0.1 s; on
    anything else it stays quiet except for one line per finished sequence.
    """

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True,
                 interactive: Optional[bool] = None):
        """Write to ``stream``; ``interactive`` defaults to whether it is a TTY."""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        if interactive is None:
            isatty = getattr(self.stream, 'isatty', None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self._prefix = ''
        self._last_draw = 0.0
        self._width = 0

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write('\r' + text + ' ' * pad)
        self.stream.flush()
        self._width = len(text)

    def start_sequence(self, index: int, count: int, name: str, frames: int) -> None:
        """Begin a new sequence (``index`` is 1-based)."""
        self._prefix = f'[{index}/{count}] {name} ({frames} frames)'
        if self.enabled and self.interactive:
            self._draw(self._prefix + ' decoding')

    def frame(self, tracker: str, i: int, n: int) -> None:
        """Tracker ``tracker`` has done frame ``i`` of ``n``."""
        if not (self.enabled and self.interactive):
            return
        now = time.monotonic()
        if i < n and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        width = 20
        done = int(width * i / max(n, 1))
        self._draw(f'{self._prefix} {tracker} [{"#" * done}{"." * (width - done)}] {i}/{n}')

    def end_sequence(self, summary: str) -> None:
        """End the sequence: leave one line with its summary."""
        if not self.enabled:
            return
        line = f'{self._prefix}: {summary}'
        if self.interactive:
            self._draw(line)
            self.stream.write('\n')
            self._width = 0
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own."""
        if not self.enabled:
            return
        if self.interactive and self._width:
            self._draw('')
            self.stream.write('\r')
            self._width = 0
        self.stream.write(text + '\n')
        self.stream.flush()


def run_tracker(tracker: Any, frames: Seq[np.ndarray], sequence: Sequence, name: str = '',
                progress: Optional[Progress] = None,
                init_box: Optional[BBox] = None) -> TrackerRun:
    """
    Run ``tracker`` on one sequence.

    Start it on frame 0 from the ground truth (or ``init_box``), then time ``update()`` on the
    rest.
    """
    n = len(frames)
    boxes = np.full((n, 4), np.nan)
    scores = np.full(n, np.nan)
    confidences = np.full(n, np.nan)
    found = np.zeros(n, dtype=bool)

    def store(i: int, result: TrackResult) -> None:
        boxes[i] = result.box.as_tuple()
        scores[i] = result.score
        confidences[i] = result.confidence
        found[i] = result.found

    try:
        store(0, tracker.init(frames[0], init_box or sequence.init_box))
    except Exception as exc:
        raise RuntimeError(f'{name} failed to start on {sequence.name}: {exc}') from exc
    gc.collect()
    total = 0.0
    perf_counter = time.perf_counter
    for i in range(1, n):
        frame = frames[i]
        try:
            t0 = perf_counter()
            result = tracker.update(frame)
            total += perf_counter() - t0
        except Exception as exc:
            raise RuntimeError(f'{name} failed on {sequence.name} frame {i}: {exc}') from exc
        store(i, result)
        if progress is not None:
            progress.frame(name, i + 1, n)
    return TrackerRun(boxes=boxes, scores=scores, confidences=confidences, found=found,
                      update_s=total, updates=n - 1)


def _num(value: Optional[float]) -> Optional[float]:
    """JSON-safe float: None for None, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _curve(values: np.ndarray) -> List[Optional[float]]:
    return [_num(v) for v in values]


def calibration_fields(cal: Calibration) -> Dict[str, Any]:
    """
    Return the JSON fields of a calibration.

    ``ece``, ``brier`` and ``calibration``: per bin (thresholds ``calibration_bins``) the frame
    count, mean confidence and hit rate (None for an empty bin).
    """
    return {
        'ece': _num(cal.ece),
        'brier': _num(cal.brier),
        'calibration': {
            'counts': [int(v) for v in cal.counts],
            'mean_confidence': _curve(cal.mean_confidence),
            'hit_rate': _curve(cal.hit_rate),
        },
    }


def calibration_from_record(record: Dict[str, Any]) -> Calibration:
    """Rebuild the Calibration behind a record's ``calibration_fields`` (to pool sequences)."""
    block = record['calibration']
    counts = np.asarray(block['counts'], dtype=np.int64)
    conf = np.array([0.0 if v is None else v for v in block['mean_confidence']])
    rate = np.array([0.0 if v is None else v for v in block['hit_rate']])
    return Calibration(counts=counts, confidence_sum=counts * conf,
                       hits=np.round(counts * rate),
                       squared_error_sum=(record['brier'] or 0.0) * int(counts.sum()))


def sequence_record(metrics: SequenceMetrics, run: TrackerRun,
                    save_boxes: bool = False) -> Dict[str, Any]:
    """Return the JSON block of one tracker on one sequence."""
    record: Dict[str, Any] = {
        'auc': _num(metrics.auc),
        'prec20': _num(metrics.prec20),
        'norm_prec': _num(metrics.norm_prec),
        'fps': _num(run.fps),
        'frames': metrics.frames,
        'frames_scored': metrics.frames_scored,
        'update_s': run.update_s,
        'mean_iou': _num(metrics.mean_iou),
        'lost_frames': metrics.lost_frames,
        'presence_precision': _num(metrics.presence_precision),
        'presence_recall': _num(metrics.presence_recall),
        'presence_f1': _num(metrics.presence_f1),
        'conf_auroc': _num(metrics.conf_auroc),
        'conf_iou_auroc': _num(metrics.conf_iou_auroc),
        'conf_target_auroc': _num(metrics.conf_target_auroc),
        'misplaced_rate': _num(metrics.misplaced_rate),
        'false_lost': metrics.false_lost,
        'false_lost_rate': _num(metrics.false_lost_rate),
        'held_frames': metrics.held_frames,
        'longest_hold': metrics.longest_hold,
        **calibration_fields(metrics.calibration),
        'success_curve': _curve(metrics.success),
        'precision_curve': _curve(metrics.precision),
        'norm_precision_curve': _curve(metrics.norm_precision),
    }
    if save_boxes:
        record['boxes'] = [[_num(v) for v in row] for row in run.boxes]
        record['found'] = [bool(v) for v in run.found]
        record['scores'] = [_num(v) for v in run.scores]
        record['confidences'] = [_num(v) for v in run.confidences]
    return record


def _mean(values: List[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def mean_record(sequences: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """
    Summary over sequences: means of the accuracy figures, the median of per-sequence fps.

    ``fps`` is the median over sequences of each sequence's update() frames/s (robust to one
    sequence with a slow first call); ``fps_mean`` is their mean. ``presence_f1`` and
    ``conf_auroc`` average only the sequences where they apply (None when none do), as do
    ``false_lost_rate`` and ``misplaced_rate`` (sequences with a visible frame);
    ``false_lost`` and ``held_frames`` are totals, ``longest_hold`` the longest over
    sequences. ``calibration``, ``ece`` and ``brier`` pool the visible frames of every
    sequence (they are not means over sequences).
    """
    recs = list(sequences.values())
    pooled = calibration([], [])
    for r in recs:
        pooled = pooled + calibration_from_record(r)
    fps = [r['fps'] for r in recs if r['fps'] is not None]
    out: Dict[str, Any] = {
        'auc': _mean([r['auc'] for r in recs]),
        'prec20': _mean([r['prec20'] for r in recs]),
        'norm_prec': _mean([r['norm_prec'] for r in recs]),
        'fps': float(statistics.median(fps)) if fps else None,
        'fps_mean': float(np.mean(fps)) if fps else None,
        'presence_f1': _mean([r['presence_f1'] for r in recs]),
        'conf_auroc': _mean([r['conf_auroc'] for r in recs]),
        'mean_iou': _mean([r['mean_iou'] for r in recs]),
        'sequences': len(recs),
        'frames': int(sum(r['frames'] for r in recs)),
        'lost_frames': int(sum(r['lost_frames'] for r in recs)),
        'false_lost_rate': _mean([r['false_lost_rate'] for r in recs]),
        'misplaced_rate': _mean([r['misplaced_rate'] for r in recs]),
        'false_lost': int(sum(r['false_lost'] for r in recs)),
        'held_frames': int(sum(r['held_frames'] for r in recs)),
        'longest_hold': max((int(r['longest_hold']) for r in recs), default=0),
        **calibration_fields(pooled),
    }
    events = events_summary([r['events'] for r in recs if 'events' in r])
    if events is not None:
        out['events'] = events
    if all(r.get('auc_repeats') for r in recs) and recs:
        runs = np.array([[np.nan if v is None else v for v in r['auc_repeats']] for r in recs])
        set_means = np.nanmean(runs, axis=0)            # one set mean per repeat
        out['auc_repeats_mean'] = _num(set_means.mean())
        out['auc_repeats_sd'] = _num(set_means.std())
        out['repeats'] = int(runs.shape[1])
    for key in ('success_curve', 'precision_curve', 'norm_precision_curve'):
        curves = np.array([[np.nan if v is None else v for v in r[key]] for r in recs])
        if curves.size and not np.isnan(curves).all(axis=0).any():
            out[key] = _curve(np.nanmean(curves, axis=0))
        else:
            out[key] = None
    return out


def thresholds_record() -> Dict[str, List[float]]:
    """Return the thresholds the curves in the JSON are sampled on."""
    return {
        'success_curve': [float(v) for v in SUCCESS_THRESHOLDS],
        'precision_curve': [float(v) for v in PRECISION_THRESHOLDS],
        'norm_precision_curve': [float(v) for v in NORM_PRECISION_THRESHOLDS],
        'calibration_bins': [float(v) for v in np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)],
    }


def jittered_boxes(sequence: Sequence, repeats: int, jitter: float) -> List[BBox]:
    """
    Return the initial boxes of ``repeats`` runs on one sequence.

    The ground truth first, then copies moved by up to ``jitter`` pixels in x and y (seeded by
    the sequence's name, so every tracker and every invocation gets the same ones).
    """
    box = sequence.init_box
    rng = np.random.default_rng(zlib.crc32(sequence.name.encode()))
    offsets = rng.uniform(-jitter, jitter, size=(max(repeats - 1, 0), 2))
    return [box] + [BBox(box.x + dx, box.y + dy, box.w, box.h) for dx, dy in offsets]


def run_evaluation(sequences: Seq[Sequence], trackers: Seq[TrackerEntry],
                   progress: Optional[Progress] = None,
                   save_boxes: bool = False, repeats: int = 1,
                   jitter: float = 0.0) -> Dict[str, Dict[str, Any]]:
    """
    Evaluate every tracker on every sequence.

    With ``repeats`` > 1 each tracker also runs from ``repeats - 1`` initial boxes moved by
    up to ``jitter`` pixels (see jittered_boxes): Siamese trackers are chaotic (crop rounding),
    so one run of a sequence is one draw; ``auc_repeats`` per sequence and
    ``auc_repeats_mean`` / ``auc_repeats_sd`` in the mean block give the spread. Everything
    else (figures, fps, plots) comes from the first, unmoved run. The mean block's
    ``conf_iou_auroc`` and ``conf_target_auroc`` pool the frames of every sequence (confidence
    against IoU >= 0.5, and against a box on the target).

    On sequences of the generated long-term set (an ``events.json`` beside ``img``) each
    record also has ``events`` (longterm_set.event_scores: re-acquired after the return,
    jumped to the look-alike) and the mean block their counts (longterm_set.events_summary).

    Returns ``{name: {'mean': {...}, 'sequences': {seq: {...}}}}`` ready for JSON.
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    if not trackers:
        raise ValueError('no trackers to evaluate')
    names = [t.name for t in trackers]
    if len(set(names)) != len(names):
        raise ValueError(f'tracker names must be unique, got {names}')
    progress = progress or Progress(enabled=False)
    per_seq: Dict[str, Dict[str, Dict[str, Any]]] = {t.name: {} for t in trackers}
    pooled: Dict[str, List[SequenceMetrics]] = {t.name: [] for t in trackers}
    for index, seq in enumerate(sequences, start=1):
        progress.start_sequence(index, len(sequences), seq.name, len(seq))
        frames = load_frames(seq)
        starts = jittered_boxes(seq, repeats, jitter)
        events = sequence_events(seq)
        parts = []
        for entry in trackers:
            run = run_tracker(entry.make(), frames, seq, entry.name, progress)
            metrics = evaluate_sequence(run.boxes, seq.gt, run.found, run.confidences)
            record = sequence_record(metrics, run, save_boxes)
            pooled[entry.name].append(metrics)
            if events is not None:
                record['events'] = event_scores(run.boxes, run.found, seq.gt, events)
            if repeats > 1:
                record['auc_repeats'] = [record['auc']] + [
                    _num(evaluate_sequence(run_tracker(entry.make(), frames, seq, entry.name,
                                                       progress, box).boxes, seq.gt).auc)
                    for box in starts[1:]]
            per_seq[entry.name][seq.name] = record
            auc = '-' if record['auc'] is None else f'{record["auc"]:.3f}'
            parts.append(f'{entry.name} AUC {auc} {run.fps:.0f} fps')
        del frames
        progress.end_sequence(' | '.join(parts))
    out = {name: {'mean': mean_record(seqs), 'sequences': seqs}
           for name, seqs in per_seq.items()}
    for name, parts in pooled.items():
        confidences = np.concatenate([m.confidences for m in parts])
        for key, labels in (('conf_iou_auroc', [m.hits for m in parts]),
                            ('conf_target_auroc', [m.on_target for m in parts])):
            out[name]['mean'][key] = _num(auroc(confidences, np.concatenate(labels)))
    return out


def _fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def _percent(share: Optional[float]) -> str:
    return '-' if share is None else f'{100.0 * share:.1f}%'


def _count(events: Dict[str, Any], hits: str, total: str) -> str:
    if not events.get(total):
        return '-'
    return f'{events[hits]}/{events[total]} ({100.0 * events[hits] / events[total]:.0f}%)'


def format_table(trackers: Dict[str, Dict[str, Any]], reference: Optional[str] = OURS) -> str:
    """
    Format a plain-text summary: one row per tracker with its mean figures and median fps.

    ``false_LOST`` is the mean over sequences of the share of visible frames reported not
    found; ``held(longest)`` the frames with a held box over the set and the longest hold;
    ``ECE``, ``Brier`` and ``AUROC(IoU)`` the calibration and the ranking power of the
    confidence for IoU >= 0.5 (pooled frames); ``misplaced`` the mean share of visible frames
    whose box is on the target below IoU 0.5, ``AUROC(on)`` the confidence's ranking of boxes
    on the target against the rest (pooled frames).

    On the generated long-term set it adds the confidence AUROC and the event counts
    (re-acquired within 10 frames of the return / events, no jump to the look-alike / events).
    When ``reference`` (our tracker) is present, a last column gives its fps divided by each
    tracker's fps.
    """
    has_ref = reference in trackers and trackers[reference]['mean']['fps']
    jittered = all('auc_repeats_mean' in b['mean'] for b in trackers.values())
    header = ['tracker', 'AUC', 'prec@20', 'norm_prec', 'fps(median)', 'presence_F1',
              'false_LOST', 'held(longest)', 'ECE', 'Brier', 'AUROC(IoU)', 'misplaced',
              'AUROC(on)']
    with_events = any('events' in b['mean'] for b in trackers.values())
    if with_events:
        header += ['conf_AUROC', 're-acquired', 'no jump']
    if jittered:
        header.insert(2, 'AUC(repeats) mean+-sd')
    if has_ref:
        header.append(f'{reference}/this fps')
    rows = [header]
    for name, block in trackers.items():
        m = block['mean']
        row = [name, _fmt(m['auc'], '.3f'), _fmt(m['prec20'], '.3f'),
               _fmt(m['norm_prec'], '.3f'), _fmt(m['fps'], '.1f'), _fmt(m['presence_f1'], '.3f'),
               _percent(m['false_lost_rate']),
               f"{m['held_frames']} ({m['longest_hold']})",
               _fmt(m['ece'], '.3f'), _fmt(m['brier'], '.3f'),
               _fmt(m.get('conf_iou_auroc'), '.3f'), _percent(m.get('misplaced_rate')),
               _fmt(m.get('conf_target_auroc'), '.3f')]
        if with_events:
            ev = m.get('events') or {}
            row += [_fmt(m['conf_auroc'], '.3f'), _count(ev, 'reacquired', 'returns'),
                    _count(ev, 'no_jump', 'lookalike_events')]
        if jittered:
            spread = _fmt(m['auc_repeats_sd'], '.3f')
            row.insert(2, f"{_fmt(m['auc_repeats_mean'], '.3f')}+-{spread}")
        if has_ref:
            ratio = (trackers[reference]['mean']['fps'] / m['fps']) if m['fps'] else None
            row.append(_fmt(ratio, '.2f') + ('x' if ratio is not None else ''))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append('  '.join(cells))
        if k == 0:
            lines.append('  '.join('-' * w for w in widths))
    return '\n'.join(lines)
