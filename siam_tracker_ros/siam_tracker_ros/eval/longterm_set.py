"""
A generated long-term set with exact ground truth, built from real sequences at run time.

Each source sequence (``<Name>/img`` + ``groundtruth.txt``) gives up to two new sequences:

* ``<Name>_exit``: a crop window (a virtual camera) follows the target, then pans away so the
  target leaves the view, stays away, and pans back so it re-enters;
* ``<Name>_occ``: an opaque occluder (a patch of another sequence's frame) is pasted over the
  whole path of the target for a while.

In both, a look-alike distractor (a copy of the target's own pixels, taken from the same source
frame) is pasted at a fixed place near the target, from shortly before the target disappears
until after it is back. The ground truth is exact: the window offsets and pasted regions are
known; a frame whose target is less than half visible gets a NaN row. ``events.json`` of each
sequence lists the absence events and the look-alike box of every frame, which
``event_scores`` uses to say whether a tracker re-acquired the target and whether it jumped to
the look-alike. Nothing is stored in the repository: ``python -m
siam_tracker_ros.eval.longterm_set --out DIR`` writes the set (default sources: ../shared).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence as Seq, Tuple

import cv2
import numpy as np

from siam_tracker_ros.eval.metrics import iou
from siam_tracker_ros.io.sequences import list_sequences, read_frame, Sequence

EVENTS_FILE = 'events.json'
LOOKALIKE_LEAD = 15      # frames the look-alike is shown before the target disappears
LOOKALIKE_TAIL = 15      # and after it is back
PAN_SPEED = 0.5          # virtual-camera pan speed, in target sizes per frame
MIN_VISIBLE = 0.5        # visible fraction under which a frame is 'target absent'
REACQUIRE_WITHIN = 10    # frames after the return in which re-acquisition counts
REACQUIRE_IOU = 0.5
JUMP_IOU = 0.3


@dataclass(frozen=True)
class Plan:
    """Where the absence of one generated sequence starts and how long it lasts."""

    start: int
    length: int


def plan_event(frames: int) -> Optional[Plan]:
    """One absence per sequence: after a third of it, 8..25 frames long, 25 frames after it."""
    start = max(LOOKALIKE_LEAD + 10, frames // 3)
    length = min(25, max(8, frames // 6))
    if start + length + LOOKALIKE_TAIL + REACQUIRE_WITHIN > frames:
        return None
    return Plan(start, length)


def _smooth(values: np.ndarray, radius: int = 5) -> np.ndarray:
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    padded = np.pad(values, (radius, radius), mode='edge')
    return np.convolve(padded, kernel, mode='valid')


def _ramp(frames: int, plan: Plan, ramp: int) -> np.ndarray:
    """0..1 pan profile: out over ``ramp`` frames up to the start, back from the end."""
    t = np.arange(frames, dtype=np.float64)
    out = np.clip((t - (plan.start - ramp)) / ramp, 0.0, 1.0)
    back = np.clip((plan.start + plan.length + ramp - 1 - t) / ramp, 0.0, 1.0)
    return np.minimum(out, back)


def _visible_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return the clipped box, or NaN when less than MIN_VISIBLE of it is inside the image."""
    x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
    x2, y2 = min(box[0] + box[2], width), min(box[1] + box[3], height)
    if x2 <= x1 or y2 <= y1 or (x2 - x1) * (y2 - y1) < MIN_VISIBLE * box[2] * box[3]:
        return np.full(4, np.nan)
    return np.array([x1, y1, x2 - x1, y2 - y1])


def exit_windows(gt: np.ndarray, frame_w: int, frame_h: int, plan: Plan
                 ) -> Optional[Tuple[np.ndarray, int, int]]:
    """
    Top-left corners (N, 2) of a virtual-camera window and its size, or None.

    The window follows the smoothed target path and pans (in the direction with room for it)
    far enough for the target to leave; sizes from 60% of the frame down are tried.
    """
    centers = gt[:, :2] + gt[:, 2:] / 2.0
    path = np.stack([_smooth(centers[:, 0]), _smooth(centers[:, 1])], axis=1)
    side = float(np.sqrt(gt[:, 2] * gt[:, 3]).max())
    start = min(0.6, 10.0 * side / frame_w)
    for frac in (start, 0.9 * start, 0.8 * start, 0.7 * start):
        ww, wh = int(frame_w * frac) // 2 * 2, int(frame_h * frac) // 2 * 2
        if min(ww, wh) < 3 * side:
            continue
        for d in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            extent = gt[:, 2].max() if d[0] else gt[:, 3].max()
            amp = (ww if d[0] else wh) / 2.0 + 0.75 * extent
            ramp = _ramp(len(gt), plan, int(math.ceil(amp / (PAN_SPEED * side))))
            c = path + np.outer(ramp * amp, d)
            x0 = np.round(c[:, 0] - ww / 2.0)
            y0 = np.round(c[:, 1] - wh / 2.0)
            event = slice(plan.start, plan.start + plan.length)
            inside = ((x0[event] >= 0) & (y0[event] >= 0) & (x0[event] + ww <= frame_w)
                      & (y0[event] + wh <= frame_h))
            if not inside.all():
                continue
            x0 = np.clip(x0, 0, frame_w - ww)
            y0 = np.clip(y0, 0, frame_h - wh)
            return np.stack([x0, y0], axis=1).astype(int), ww, wh
    return None


def _lookalike_place(boxes: np.ndarray, span: range, ref: np.ndarray, width: int, height: int,
                     blocked: List[np.ndarray]) -> Optional[Tuple[float, float]]:
    """
    Choose a fixed centre for the look-alike near ``ref`` (x, y, w, h).

    The centre never lets it overlap the target (or a blocked region) during ``span`` and
    keeps it inside the image.
    """
    side = math.sqrt(ref[2] * ref[3])
    cx, cy = ref[0] + ref[2] / 2.0, ref[1] + ref[3] / 2.0
    w_max = np.nanmax(boxes[span.start:span.stop, 2])
    h_max = np.nanmax(boxes[span.start:span.stop, 3])
    for dist in (1.8, 2.2, 2.6, 3.0):
        for ang in range(0, 360, 45):
            px = cx + dist * side * math.cos(math.radians(ang))
            py = cy + dist * side * math.sin(math.radians(ang))
            cand = np.array([px - w_max / 2 - 0.1 * w_max, py - h_max / 2 - 0.1 * h_max,
                             1.2 * w_max, 1.2 * h_max])
            if (cand[0] < 0 or cand[1] < 0 or cand[0] + cand[2] > width
                    or cand[1] + cand[3] > height):
                continue
            others = [boxes[t] for t in span if not np.isnan(boxes[t]).any()] + blocked
            if others and (iou(np.repeat(cand[None], len(others), 0), np.array(others)) > 0
                           ).any():
                continue
            return px, py
    return None


def _paste(image: np.ndarray, patch: np.ndarray, box: np.ndarray) -> None:
    x, y, w, h = (int(round(v)) for v in box)
    if w < 1 or h < 1:
        return
    resized = cv2.resize(patch, (w, h), interpolation=cv2.INTER_LINEAR)
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    if x2 > x1 and y2 > y1:
        image[y1:y2, x1:x2] = resized[y1 - y:y2 - y, x1 - x:x2 - x]


def _target_patch(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x, y, w, h = box
    x1, y1 = int(max(round(x), 0)), int(max(round(y), 0))
    x2 = int(min(round(x + w), frame.shape[1]))
    y2 = int(min(round(y + h), frame.shape[0]))
    return frame[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)].copy()


def _write(out: Path, name: str, frames, gt: np.ndarray, lookalike: np.ndarray,
           kind: str, source: str) -> Path:
    root = out / name
    (root / 'img').mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(root / 'img' / f'{i + 1:05d}.jpg'), frame,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    np.savetxt(str(root / 'groundtruth.txt'), gt, fmt='%.2f', delimiter=',')
    absent = np.isnan(gt).any(axis=1)
    events = []
    t = 1
    while t < len(gt):
        if absent[t]:
            start = t
            while t < len(gt) and absent[t]:
                t += 1
            events.append({'start': start, 'return': t if t < len(gt) else None})
        t += 1
    (root / EVENTS_FILE).write_text(json.dumps({
        'kind': kind, 'source': source, 'events': events,
        'lookalike': [None if np.isnan(b).any() else [float(v) for v in b] for b in lookalike],
    }) + '\n')
    return root


def _occluder_texture(occluder_source: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(occluder_source, (0, 0), 1.0)


def build_exit(seq: Sequence, frames: List[np.ndarray], out: Path) -> Optional[Path]:
    """``<Name>_exit``: the virtual camera pans the target out of view and back."""
    plan = plan_event(len(frames))
    if plan is None:
        return None
    fh, fw = frames[0].shape[:2]
    made = exit_windows(seq.gt, fw, fh, plan)
    if made is None:
        return None
    corners, ww, wh = made
    n = len(frames)
    gt = np.array([_visible_box(seq.gt[t] - [corners[t, 0], corners[t, 1], 0, 0], ww, wh)
                   for t in range(n)])
    if not np.isnan(gt[plan.start]).all() or np.isnan(gt[0]).any():
        return None
    span = range(max(plan.start - LOOKALIKE_LEAD, 1),
                 min(plan.start + plan.length + LOOKALIKE_TAIL, n))
    ref = gt[max(plan.start - LOOKALIKE_LEAD, 1)]
    place = None if np.isnan(ref).any() else _lookalike_place(
        np.where(np.isnan(gt), np.nan, gt), span, ref, ww, wh, [])
    lookalike = np.full((n, 4), np.nan)
    out_frames = []
    for t in range(n):
        x0, y0 = corners[t]
        view = frames[t][y0:y0 + wh, x0:x0 + ww].copy()
        if place is not None and t in span:
            b = seq.gt[t]
            lookalike[t] = [place[0] - b[2] / 2, place[1] - b[3] / 2, b[2], b[3]]
            _paste(view, _target_patch(frames[t], b), lookalike[t])
        out_frames.append(view)
    return _write(out, f'{seq.name}_exit', out_frames, gt, lookalike, 'exit', seq.name)


def build_occlusion(seq: Sequence, frames: List[np.ndarray], texture: np.ndarray,
                    out: Path) -> Optional[Path]:
    """``<Name>_occ``: an occluder covers the target's whole path for a while."""
    plan = plan_event(len(frames))
    if plan is None:
        return None
    fh, fw = frames[0].shape[:2]
    n = len(frames)
    length = plan.length
    while length >= 8:
        boxes = seq.gt[plan.start:plan.start + length]
        x1 = boxes[:, 0].min()
        y1 = boxes[:, 1].min()
        x2 = (boxes[:, 0] + boxes[:, 2]).max()
        y2 = (boxes[:, 1] + boxes[:, 3]).max()
        mx, my = 0.15 * (x2 - x1) + 2, 0.15 * (y2 - y1) + 2
        occ = np.array([np.floor(x1 - mx), np.floor(y1 - my), 0, 0])
        occ[2] = np.ceil(x2 + mx) - occ[0]
        occ[3] = np.ceil(y2 + my) - occ[1]
        if occ[2] * occ[3] <= 0.25 * fw * fh:
            break
        length -= 4
    else:
        return None
    plan = Plan(plan.start, length)
    gt = np.array([_visible_box(b, fw, fh) for b in seq.gt])
    gt[plan.start:plan.start + plan.length] = np.nan
    span = range(max(plan.start - LOOKALIKE_LEAD, 1),
                 min(plan.start + plan.length + LOOKALIKE_TAIL, n))
    place = _lookalike_place(gt, span, gt[plan.start - 1], fw, fh, [occ])
    lookalike = np.full((n, 4), np.nan)
    out_frames = []
    for t in range(n):
        frame = frames[t].copy()
        if place is not None and t in span:
            b = seq.gt[t]
            lookalike[t] = [place[0] - b[2] / 2, place[1] - b[3] / 2, b[2], b[3]]
            _paste(frame, _target_patch(frames[t], b), lookalike[t])
        if plan.start <= t < plan.start + plan.length:
            _paste(frame, texture, occ)
        out_frames.append(frame)
    return _write(out, f'{seq.name}_occ', out_frames, gt, lookalike, 'occlusion', seq.name)


def build_longterm_set(sources, out, names: Optional[Seq[str]] = None,
                       max_frames: Optional[int] = None, kinds: Seq[str] = ('exit', 'occ'),
                       log=None) -> List[Path]:
    """
    Build the set from the sequences under ``sources`` into ``out``; return the folders.

    ``names`` restricts the source sequences, ``max_frames`` cuts each source (small test
    sets). Deterministic: the same sources give the same set.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seqs = list_sequences(sources, names)
    made = []
    for k, seq in enumerate(seqs):
        if max_frames:
            seq = Sequence(seq.name, seq.frames[:max_frames], seq.gt[:max_frames])
        frames = [read_frame(p) for p in seq.frames]
        other = seqs[(k + 1) % len(seqs)] if len(seqs) > 1 else seq
        texture = _occluder_texture(read_frame(other.frames[len(other.frames) // 2]))
        if len(seqs) == 1:
            texture = cv2.flip(texture, -1)
        for kind in kinds:
            if kind == 'exit':
                path = build_exit(seq, frames, out)
            elif kind == 'occ':
                path = build_occlusion(seq, frames, texture, out)
            else:
                raise ValueError(f'unknown kind {kind!r}; use exit or occ')
            if path is not None:
                made.append(path)
            if log is not None:
                log(f'{seq.name} {kind}: ' + (str(path) if path else 'skipped (no room)'))
    return made


def load_events(root) -> Dict[str, Any]:
    """Read the events.json of a generated sequence."""
    return json.loads((Path(root) / EVENTS_FILE).read_text())


def event_scores(boxes: np.ndarray, found: np.ndarray, gt: np.ndarray,
                 events: Dict[str, Any]) -> List[Dict[str, Any]]:
    """
    Score each absence event.

    Per event: re-acquired within REACQUIRE_WITHIN frames of the return (found and
    IoU >= REACQUIRE_IOU), and whether the tracker jumped to the look-alike (reported found
    on a box overlapping the look-alike by IoU > JUMP_IOU on any frame where it is shown).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    found = np.asarray(found, dtype=bool)
    look = np.array([[np.nan] * 4 if b is None else b for b in events['lookalike']])
    shown = ~np.isnan(look).any(axis=1)
    out = []
    for ev in events['events']:
        r = ev['return']
        rec: Dict[str, Any] = {'start': ev['start'], 'return': r}
        if r is not None:
            stop = min(r + REACQUIRE_WITHIN + 1, len(gt))
            ious = iou(boxes[r:stop], gt[r:stop])
            hit = np.nonzero(found[r:stop] & (np.nan_to_num(ious) >= REACQUIRE_IOU))[0]
            rec['reacquired'] = bool(hit.size)
            rec['reacquire_frames'] = int(hit[0]) if hit.size else None
        if shown.any():
            frames = np.nonzero(shown)[0]
            j = iou(boxes[frames], look[frames])
            rec['lookalike'] = True
            rec['jumped'] = bool((found[frames] & (j > JUMP_IOU)).any())
        else:
            rec['lookalike'] = False
        out.append(rec)
    return out


def sequence_events(sequence: Sequence) -> Optional[Dict[str, Any]]:
    """Read the events.json of a sequence of the generated set; None for any other sequence."""
    if not sequence.frames:
        return None
    root = Path(sequence.frames[0]).parent.parent
    return load_events(root) if (root / EVENTS_FILE).is_file() else None


def events_summary(per_sequence: Seq[List[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """
    Count over the event lists of several sequences.

    Events with a return and how many were re-acquired within REACQUIRE_WITHIN frames; events
    with a look-alike and how many passed without a jump to it. None when there are no events.
    """
    events = [e for evs in per_sequence for e in evs]
    if not events:
        return None
    returns = [e for e in events if e.get('return') is not None]
    shown = [e for e in events if e.get('lookalike')]
    reacquired = sum(1 for e in returns if e['reacquired'])
    kept = sum(1 for e in shown if not e['jumped'])
    return {
        'events': len(events),
        'returns': len(returns),
        'reacquired': reacquired,
        'reacquired_rate': reacquired / len(returns) if returns else None,
        'lookalike_events': len(shown),
        'no_jump': kept,
        'no_jump_rate': kept / len(shown) if shown else None,
    }


def default_sources() -> Path:
    """../shared/sequences beside the repository, or $SIAM_SHARED/sequences."""
    env = os.environ.get('SIAM_SHARED')
    if env:
        return Path(env) / 'sequences'
    return Path(__file__).resolve().parents[3].parent / 'shared' / 'sequences'


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m siam_tracker_ros.eval.longterm_set``."""
    p = argparse.ArgumentParser(
        prog='python -m siam_tracker_ros.eval.longterm_set',
        description='Build the generated long-term set (target exits, occluders, look-alikes, '
                    'exact ground truth) from real sequences.')
    add_set_arguments(p, 'out/longterm')
    p.add_argument('--max-frames', type=int, default=None, help='cut each source sequence')
    return p


def add_set_arguments(p: argparse.ArgumentParser, example_out: str) -> None:
    """Add --out, --sources and --seq: the arguments of every command that builds a set."""
    p.add_argument('--out', required=True, help=f'output folder (e.g. {example_out})')
    p.add_argument('--sources', default=None,
                   help='folder of source sequences (default ../shared/sequences)')
    p.add_argument('--seq', nargs='+', default=None, metavar='NAME',
                   help='only these source sequences')


def build_from_args(args: argparse.Namespace, build: Callable[[Path], List[Path]]) -> int:
    """
    Run a set command: ``build(sources)`` on its source folder, then say what it wrote.

    Return 2 (after saying why) when the source folder is missing, else 0.
    """
    sources = Path(args.sources) if args.sources else default_sources()
    if not sources.is_dir():
        print(f'error: source sequences {sources} not found; pass --sources', file=sys.stderr)
        return 2
    made = build(sources)
    print(f'{len(made)} sequences written to {args.out}')
    return 0


def main(argv: Optional[Seq[str]] = None) -> int:
    """Build the set; print one line per generated sequence."""
    args = build_parser().parse_args(argv)
    return build_from_args(args, lambda sources: build_longterm_set(
        sources, args.out, args.seq, args.max_frames, log=lambda m: print(m, file=sys.stderr)))


if __name__ == '__main__':
    sys.exit(main())
