"""
Training pairs: template and search crops cut the way the tracker cuts them, with their labels.

A pair is drawn from one sequence: a template frame and a search frame at most ``frame_gap``
frames apart, both with a visible target. The crops follow the tracker (core/tracker.py): the
target centre is ``(x + (w - 1) / 2, y + (h - 1) / 2)``, the template window is
``context_size(w, h, context_amount)`` pixels and the search window ``instance / exemplar``
times that, cut with ``core.crop.crop_window`` and the frame's mean colour (floored) as padding.
Without jitter the crops are exactly the tracker's.

Sampling (pysot / NanoTrack / SiamRPN++ / DaSiamRPN):

* SiamRPN++ spatial-aware sampling: the target is shifted inside the search crop by up to
  ``search_shift`` crop pixels (uniform), breaking the centre bias; the template by up to
  ``template_shift``;
* scale jitter of both windows and aspect jitter of the search window (a non-square window is
  cut with an affine warp, the same mapping, then resized to a square crop);
* pysot's PCA colour noise and motion blur per crop, grey and horizontal flip per pair;
* DaSiamRPN negatives: a semantic negative is a search crop around the target of another
  sequence, a hard negative a search crop of the same frame that does not contain the target;
  every label of a negative is 0;
* history templates (ST fusion, ``history`` > 1): crops of later visible frames between the
  template and the search frame, oldest first; previous search frames (TAFA, ``frames`` > 1):
  frames t-2, t-1 cut with frame t's window moved with the target (the target keeps its place
  in the crop, as it roughly does between consecutive search windows of the tracker).

Labels live on the score-map points of ``core.decode.point_grid`` (offsets from the crop
centre): ``reg_target`` is the (l, t, r, b) distance in crop pixels from each point to the
target box sides, what the anchor-free decoder reads. Positives (``label_assignment``):

* ``ellipse`` (NanoTrack / SiamBAN upstream): points inside the ellipse of semi-axes w/4, h/4
  around the target centre are positive, points outside the w/2, h/2 ellipse negative, the
  ring between ignored;
* ``centre_distance`` (DASTSiam): points within ``centre_pos_radius`` strides of the target
  centre (and inside its box) are positive, those beyond ``centre_neg_radius`` negative.

At most ``pos_num`` positives and ``neg_num`` negatives are kept (chosen at random, upstream's
64-point budget); the rest are ignored (-1).

An anchor head (SiamRPN++: ``Geometry.anchors`` set) is labelled per anchor instead
(``anchor_labels``, pysot's ``AnchorTarget``), on the anchors the tracker decodes
(``core.decode.anchor_boxes``, K per score-map point): an anchor whose IoU with the target box is
above ``anchor_pos_iou`` is positive, below ``anchor_neg_iou`` negative, between ignored; at
most ``pos_num`` positives and ``neg_num`` negatives are kept. ``reg_target`` holds pysot's
deltas (dx, dy, dw, dh) = ((tx - ax) / aw, (ty - ay) / ah, log(tw / aw), log(th / ah)) and
``reg_weight`` is 1 / (number of positives) on the positives (pysot's ``delta_weight``). Every
anchor of a negative pair is negative (``neg_num`` of them kept), with no regression.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence as Seq, Tuple

import cv2
import numpy as np

from .config import SamplerConfig
from .datasets import visible_mask
from ..core.crop import context_size, crop_window, pad_colour
from ..core.decode import anchor_boxes, point_grid
from ..core.manifest import AnchorSpec
from ..io.sequences import read_frame, Sequence

# pysot's PCA colour noise (RGB eigenvectors scaled by the eigenvalues).
_RGB_VAR = np.array([[-0.55919361, 0.98062831, -0.41940627],
                     [1.72091413, 0.19879334, -1.82968581],
                     [4.64467907, 4.73710203, 4.88324118]], dtype=np.float32)
_HARD_NEGATIVE_TRIES = 10


@dataclass(frozen=True)
class Geometry:
    """Crop sizes and score map of the network being trained."""

    exemplar_size: int
    instance_size: int
    score_size: int
    stride: int
    context_amount: float
    anchors: Optional[AnchorSpec] = None   # an anchor head's anchors (None: anchor-free points)


@dataclass(frozen=True)
class Window:
    """A crop window in image pixels: centre and side lengths (square when they are equal)."""

    center: Tuple[float, float]
    width: float
    height: float

    def crop(self, image: np.ndarray, out_size: int, pad_color) -> np.ndarray:
        """Cut the window and resize it to out_size^2 (crop_window when square)."""
        if self.width == self.height:
            return crop_window(image, self.center, max(int(round(self.width)), 1), out_size,
                               pad_color)
        a, b = out_size / self.width, out_size / self.height
        mid = (out_size - 1) / 2.0
        matrix = np.array([[a, 0.0, mid - a * self.center[0]],
                           [0.0, b, mid - b * self.center[1]]])
        return cv2.warpAffine(image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT,
                              borderValue=tuple(float(c) for c in pad_color))

    def relative(self, box: np.ndarray, out_size: int) -> np.ndarray:
        """Box (x, y, w, h) in the image -> (cx, cy, w, h) from the crop centre, crop pixels."""
        a, b = out_size / self.width, out_size / self.height
        cx, cy = target_center(box)
        return np.array([(cx - self.center[0]) * a, (cy - self.center[1]) * b,
                         box[2] * a, box[3] * b])

    def moved(self, dx: float, dy: float) -> 'Window':
        """Return the same window moved by (dx, dy) image pixels."""
        return Window((self.center[0] + dx, self.center[1] + dy), self.width, self.height)


@dataclass(frozen=True, eq=False)
class Pair:
    """One training sample with what it was made of."""

    templates: np.ndarray       # (H, 3, Z, Z) float32 raw BGR
    searches: np.ndarray        # (F, 3, X, X) float32 raw BGR, the last one is frame t
    cls_label: np.ndarray       # (S, S) float32: 1 positive, 0 negative, -1 ignore
    reg_target: np.ndarray      # (4, S, S) float32 (l, t, r, b) in search-crop pixels
    reg_weight: np.ndarray      # (S, S) float32: 1 where regression counts
    # (anchor heads: (K, S, S), (4, K, S, S) deltas, (K, S, S) 1 / positives; see labels())
    negative: bool
    box: np.ndarray             # (cx, cy, w, h) of the target in frame t's crop (NaN if none)
    kind: str                   # 'positive', 'semantic' or 'hard'
    sequence: str
    template_frame: int
    search_sequence: str
    search_frame: int
    history_frames: Tuple[int, ...]
    previous_frames: Tuple[int, ...]

    def batch_item(self) -> Dict[str, np.ndarray]:
        """Return the tensors of the training batch (see I16: templates ... negative)."""
        return {'templates': self.templates, 'searches': self.searches,
                'cls_label': self.cls_label, 'reg_target': self.reg_target,
                'reg_weight': self.reg_weight, 'negative': np.bool_(self.negative)}


def target_center(box: np.ndarray) -> Tuple[float, float]:
    """Centre of an (x, y, w, h) box as the tracker defines it (0-based pixel centres)."""
    return (float(box[0] + (box[2] - 1) / 2.0), float(box[1] + (box[3] - 1) / 2.0))


def _keep(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``count`` of the True cells of ``mask`` (chosen at random; 0 = all)."""
    idx = np.flatnonzero(mask)
    if not count or idx.size <= count:
        return mask
    out = np.zeros(mask.size, dtype=bool)
    out[rng.choice(idx, count, replace=False)] = True
    return out.reshape(mask.shape)


def point_labels(box: Optional[np.ndarray], geometry: Geometry, config: SamplerConfig,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    (cls_label (S, S), reg_target (4, S, S), reg_weight (S, S)) for a target box.

    ``box`` is (cx, cy, w, h) relative to the search-crop centre in crop pixels; None means a
    negative pair (every label 0, no regression).
    """
    size = geometry.score_size
    if box is None:
        return (np.zeros((size, size), np.float32), np.zeros((4, size, size), np.float32),
                np.zeros((size, size), np.float32))
    px, py = (g.reshape(size, size).astype(np.float64)
              for g in point_grid(size, geometry.stride))
    cx, cy, w, h = (float(v) for v in box)
    x1, y1, x2, y2 = cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0
    reg = np.stack([px - x1, py - y1, x2 - px, y2 - py])
    if config.label_assignment == 'centre_distance':
        dist = np.hypot(px - cx, py - cy) / geometry.stride
        pos = (dist <= config.centre_pos_radius) & (reg > 0).all(axis=0)
        neg = dist > config.centre_neg_radius
    else:
        dx, dy = px - cx, py - cy
        pos = (dx / (w / 4.0)) ** 2 + (dy / (h / 4.0)) ** 2 < 1.0
        neg = (dx / (w / 2.0)) ** 2 + (dy / (h / 2.0)) ** 2 > 1.0
    pos = _keep(pos, config.pos_num, rng)
    neg = _keep(neg, config.neg_num, rng)
    cls = np.full((size, size), -1.0, np.float32)
    cls[neg] = 0.0
    cls[pos] = 1.0
    return cls, reg.astype(np.float32), pos.astype(np.float32)


def anchor_labels(box: Optional[np.ndarray], geometry: Geometry, config: SamplerConfig,
                  rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    (cls_label (K, S, S), reg_target (4, K, S, S), reg_weight (K, S, S)) of an anchor head.

    ``box`` is (cx, cy, w, h) relative to the search-crop centre in crop pixels, None for a
    negative pair. Anchors are ``core.decode.anchor_boxes`` of ``geometry.anchors`` (see the
    module docstring for the rule: pysot's AnchorTarget).
    """
    size, spec = geometry.score_size, geometry.anchors
    if spec is None:
        raise ValueError("anchor_labels needs Geometry.anchors (the head's anchor set)")
    k = spec.count
    anchors = anchor_boxes(size, geometry.stride, tuple(spec.ratios), tuple(spec.scales))
    ax, ay, aw, ah = (a.reshape(k, size, size).astype(np.float64) for a in anchors)
    cls = np.full((k, size, size), -1.0, np.float32)
    reg = np.zeros((4, k, size, size), np.float32)
    weight = np.zeros((k, size, size), np.float32)
    if box is None:
        cls[_keep(np.ones(cls.shape, bool), config.neg_num, rng)] = 0.0
        return cls, reg, weight
    cx, cy, w, h = (float(v) for v in box)
    iw = np.clip(np.minimum(ax + aw / 2, cx + w / 2) - np.maximum(ax - aw / 2, cx - w / 2),
                 0.0, None)
    ih = np.clip(np.minimum(ay + ah / 2, cy + h / 2) - np.maximum(ay - ah / 2, cy - h / 2),
                 0.0, None)
    inter = iw * ih
    iou = inter / (aw * ah + w * h - inter)
    pos = _keep(iou > config.anchor_pos_iou, config.pos_num, rng)
    neg = _keep(iou < config.anchor_neg_iou, config.neg_num, rng)
    cls[neg] = 0.0
    cls[pos] = 1.0
    tw, th = max(w, 1e-6), max(h, 1e-6)     # finite deltas even for a degenerate box
    reg[:] = np.stack([(cx - ax) / aw, (cy - ay) / ah, np.log(tw / aw), np.log(th / ah)])
    count = int(pos.sum())
    if count:
        weight[pos] = 1.0 / count
    return cls, reg, weight


def labels(box: Optional[np.ndarray], geometry: Geometry, config: SamplerConfig,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the labels of ``box`` for the head of ``geometry``: anchors or points."""
    if geometry.anchors is not None:
        return anchor_labels(box, geometry, config, rng)
    return point_labels(box, geometry, config, rng)


def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    """Return pysot's blur kernel: a cross of random size whose arms share the weight at random."""
    size = int(rng.choice(np.arange(5, 46, 2)))
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    wx = rng.random()
    kernel[:, c] += 1.0 / size * wx
    kernel[c, :] += 1.0 / size * (1.0 - wx)
    return kernel


def _finish(crop: np.ndarray, gray: bool, color: float, blur: float,
            rng: np.random.Generator) -> np.ndarray:
    """Grey, colour noise and blur on a uint8 crop -> float32 HxWx3 in 0..255."""
    if gray:
        crop = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    image = crop.astype(np.float32)
    if rng.random() < color:
        offset = (_RGB_VAR @ rng.standard_normal(3).astype(np.float32))[::-1]
        image = np.clip(image - offset, 0.0, 255.0)
    if rng.random() < blur:
        image = cv2.filter2D(image, -1, _motion_kernel(rng))
    return image


class FrameCache:
    """Decoded frames with their padding colour (the floored channel mean), least recent out."""

    def __init__(self, capacity: int = 32):
        self.capacity = int(capacity)
        self._items: 'OrderedDict[Path, Tuple[np.ndarray, Tuple[float, ...]]]' = OrderedDict()

    def get(self, path: Path) -> Tuple[np.ndarray, Tuple[float, ...]]:
        """Return (BGR image, padding colour) of a frame."""
        item = self._items.get(path)
        if item is not None:
            self._items.move_to_end(path)
            return item
        image = read_frame(path)
        item = (image, pad_colour(image))
        if self.capacity:
            self._items[path] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item


class PairSampler:
    """Draws training pairs from sequences (see the module docstring)."""

    def __init__(self, sequences: Seq[Sequence], config: SamplerConfig, geometry: Geometry,
                 history: int = 1, frames: int = 1, weights: Optional[Seq[float]] = None,
                 cache: Optional[FrameCache] = None):
        """
        Sample from ``sequences`` (each needs a visible frame) with per-sequence ``weights``.

        ``history`` is H (template crops per pair), ``frames`` F (search crops per pair).
        """
        if history < 1 or frames < 1:
            raise ValueError(f'history and frames must be >= 1, got {history}, {frames}')
        kept = [(s, np.flatnonzero(visible_mask(s.gt)), w) for s, w in
                zip(sequences, weights if weights is not None else [1.0] * len(sequences))]
        dropped = [s.name for s, v, _ in kept if v.size == 0]
        kept = [k for k in kept if k[1].size]
        if not kept:
            raise ValueError('no training sequence has a frame with a visible target'
                             + (f' ({", ".join(dropped)})' if dropped else ''))
        self.sequences = [k[0] for k in kept]
        self.visible = [k[1] for k in kept]
        w = np.asarray([k[2] for k in kept], dtype=np.float64)
        self.weights = w / w.sum()
        self.dropped = tuple(dropped)
        self.config = config
        self.geometry = geometry
        self.history = int(history)
        self.frames = int(frames)
        self.cache = cache if cache is not None else FrameCache()

    # -- windows -------------------------------------------------------------------------

    def template_window(self, box: np.ndarray, rng: Optional[np.random.Generator]) -> Window:
        """Return the template window of a target (jittered when ``rng`` is given)."""
        cfg, g = self.config, self.geometry
        side = context_size(box[2], box[3], g.context_amount)
        cx, cy = target_center(box)
        if rng is not None:
            side *= 1.0 + rng.uniform(-cfg.template_scale, cfg.template_scale)
            dx, dy = rng.uniform(-cfg.template_shift, cfg.template_shift, 2)
            cx, cy = cx - dx * side / g.exemplar_size, cy - dy * side / g.exemplar_size
        return Window((cx, cy), side, side)

    def search_window(self, box: np.ndarray, rng: Optional[np.random.Generator]) -> Window:
        """Return the search window of a target (shifted and jittered when ``rng`` is given)."""
        cfg, g = self.config, self.geometry
        side = context_size(box[2], box[3], g.context_amount) * g.instance_size / g.exemplar_size
        cx, cy = target_center(box)
        if rng is None:
            return Window((cx, cy), side, side)
        side *= 1.0 + rng.uniform(-cfg.search_scale, cfg.search_scale)
        width = height = side
        if cfg.search_aspect > 0:
            ratio = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(cfg.search_aspect))
            width, height = side * math.sqrt(ratio), side / math.sqrt(ratio)
        dx, dy = rng.uniform(-cfg.search_shift, cfg.search_shift, 2)
        return Window((cx - dx * width / g.instance_size, cy - dy * height / g.instance_size),
                      width, height)

    def _away_window(self, box: np.ndarray, shape: Tuple[int, ...],
                     rng: np.random.Generator) -> Window:
        """Return a search window of the target's size that does not contain any of its box."""
        win = self.search_window(box, rng)
        x, y, w, h = box
        height, width = shape[:2]

        def clear(cx: float, cy: float) -> bool:
            return (cx + win.width / 2 <= x or cx - win.width / 2 >= x + w
                    or cy + win.height / 2 <= y or cy - win.height / 2 >= y + h)

        for _ in range(_HARD_NEGATIVE_TRIES):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            if clear(cx, cy):
                return Window((cx, cy), win.width, win.height)
        tx, ty = target_center(box)
        side = int(rng.integers(4))
        gap_x, gap_y = (win.width + w) / 2 + 1, (win.height + h) / 2 + 1
        cx = tx + (-gap_x, gap_x, 0.0, 0.0)[side]
        cy = ty + (0.0, 0.0, -gap_y, gap_y)[side]
        return Window((cx, cy), win.width, win.height)

    # -- frames --------------------------------------------------------------------------

    def _pick_frames(self, visible: np.ndarray,
                     rng: np.random.Generator) -> Tuple[int, int]:
        """(template, search) frame indices, both visible, at most frame_gap apart."""
        gap = self.config.frame_gap
        t = int(rng.choice(visible))
        near = visible[(visible >= t - gap) & (visible <= t + gap)]
        if self.history > 1:               # history lies between template and search
            later = near[near > t]
            near = later if later.size else np.array([t])
        return t, int(rng.choice(near))

    def _history(self, visible: np.ndarray, t: int, s: int,
                 rng: np.random.Generator) -> Tuple[int, ...]:
        count = self.history - 1
        if not count:
            return ()
        lo, hi = min(t, s), max(t, s)
        pool = visible[(visible > lo) & (visible < hi)]
        if pool.size < count:
            pool = visible[(visible >= lo) & (visible <= hi)]
        picks = rng.choice(pool, count, replace=pool.size < count)
        return tuple(int(v) for v in np.sort(picks))

    # -- sampling ------------------------------------------------------------------------

    def _crop(self, seq: Sequence, index: int, window: Window, out_size: int, gray: bool,
              blur: float, rng: np.random.Generator) -> np.ndarray:
        image, pad = self.cache.get(seq.frames[index])
        crop = window.crop(image, out_size, pad)
        return _finish(crop, gray, self.config.color, blur, rng)

    def sample(self, rng: np.random.Generator) -> Pair:
        """Draw one pair; everything random comes from ``rng``."""
        cfg, g = self.config, self.geometry
        k = int(rng.choice(len(self.sequences), p=self.weights))
        seq, visible = self.sequences[k], self.visible[k]
        # Every decision draws its number whatever its probability, so changing one
        # probability leaves the other draws of a sample as they were.
        negative, gray, flip = (bool(u < p) for u, p in zip(
            rng.random(3), (cfg.negative, cfg.gray, cfg.flip)))
        t, s = self._pick_frames(visible, rng)
        history = self._history(visible, t, s, rng)

        templates = [self._crop(seq, i, self.template_window(seq.gt[i], rng), g.exemplar_size,
                                gray, cfg.template_blur, rng) for i in (t,) + history]

        kind, search_seq = 'positive', seq
        if negative:
            hard = len(self.sequences) == 1 or rng.random() < cfg.hard_negative
            if hard:
                kind = 'hard'
                image, _ = self.cache.get(seq.frames[s])
                window = self._away_window(seq.gt[s], image.shape, rng)
            else:
                kind = 'semantic'
                other = int(rng.choice([j for j in range(len(self.sequences)) if j != k]))
                search_seq = self.sequences[other]
                s = int(rng.choice(self.visible[other]))
                window = self.search_window(search_seq.gt[s], rng)
        else:
            window = self.search_window(seq.gt[s], rng)

        previous = tuple(max(s - d, 0) for d in range(self.frames - 1, 0, -1))
        searches = []
        anchor = target_center(search_seq.gt[s])
        for i in previous + (s,):
            win = window
            if kind != 'hard' and i != s and visible_mask(search_seq.gt[i:i + 1])[0]:
                cx, cy = target_center(search_seq.gt[i])
                win = window.moved(cx - anchor[0], cy - anchor[1])
            searches.append(self._crop(search_seq, i, win, g.instance_size, gray,
                                       cfg.search_blur, rng))

        box = None if negative else window.relative(seq.gt[s], g.instance_size)
        if flip:
            templates = [c[:, ::-1] for c in templates]
            searches = [c[:, ::-1] for c in searches]
            if box is not None:
                box = box * np.array([-1.0, 1.0, 1.0, 1.0])
        cls, reg, weight = labels(box, g, cfg, rng)
        return Pair(templates=_stack(templates), searches=_stack(searches), cls_label=cls,
                    reg_target=reg, reg_weight=weight, negative=negative,
                    box=np.full(4, np.nan) if box is None else box, kind=kind,
                    sequence=seq.name, template_frame=t, search_sequence=search_seq.name,
                    search_frame=s, history_frames=history, previous_frames=previous)


def _stack(crops: List[np.ndarray]) -> np.ndarray:
    """HxWx3 crops -> (N, 3, H, W) float32."""
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)
