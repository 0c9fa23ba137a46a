"""
Decoding of the network outputs into scored candidate boxes, and candidate selection.

Two decoders share one selection step:

* ``AnchorFreeDecoder`` (NanoTrack / SiamBAN): per score-map point a foreground score and the
  distances (left, top, right, bottom) from the point to the box sides, in search-crop pixels.
* ``AnchorDecoder`` (SiamRPN++): K anchors per point, cls channels laid out as [2, K] (first K
  background), reg channels as [4, K] (dx, dy, dw, dh), pysot's parameterisation.

Point grids follow upstream: the first point sits at ``-(size // 2) * stride`` from the crop
centre, so even-sized maps (16x16 of NanoTrack v1/v2) are half a cell off centre and odd ones
(15x15 of v3, 25x25 of SiamRPN++) are centred; the cosine window is indexed the same way.
Boxes come out as (cx, cy, w, h) rows relative to the search-crop centre, in crop pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Tuple

import numpy as np

from .manifest import AnchorSpec


@dataclass(frozen=True)
class Candidates:
    """
    Decoded candidates of one frame: N scores and an (4, N) array of cx, cy, w, h.

    ``margins`` are the foreground logit margins the scores are the sigmoid of (the head's
    foreground minus background logit): unlike the scores they keep their spread where a
    confident head's scores all round to 1 in float32.
    """

    scores: np.ndarray
    boxes: np.ndarray
    window: np.ndarray
    margins: np.ndarray


@lru_cache(maxsize=16)
def point_grid(size: int, stride: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return the x and y offsets (row-major, size*size) of the score-map points from centre."""
    origin = -(size // 2) * stride
    coords = origin + stride * np.arange(size, dtype=np.float32)
    xx, yy = np.meshgrid(coords, coords)
    return xx.ravel(), yy.ravel()


@lru_cache(maxsize=16)
def cosine_window(size: int, repeat: int = 1) -> np.ndarray:
    """Outer product of Hanning windows, flattened row-major, tiled ``repeat`` times."""
    hann = np.hanning(size)
    window = np.outer(hann, hann).ravel()
    return np.tile(window, repeat)


def foreground_margin(cls: np.ndarray) -> np.ndarray:
    """
    Foreground minus background logit from a [1, 2K, H, W] logit map.

    Channels are laid out [K background, K foreground] (K = 1 without anchors); the result is
    flattened anchor-major then row-major.
    """
    logits = cls.reshape(2, -1)
    return logits[1] - logits[0]


def foreground_probability(margins: np.ndarray) -> np.ndarray:
    """Softmax probability of the foreground class from its logit margins."""
    return 1.0 / (1.0 + np.exp(-margins))


def _candidates(cls: np.ndarray, boxes: np.ndarray, window: np.ndarray) -> Candidates:
    margins = foreground_margin(cls)
    return Candidates(foreground_probability(margins), boxes, window, margins)


class AnchorFreeDecoder:
    """NanoTrack / SiamBAN point decoder."""

    def __init__(self, stride: int):
        self.stride = int(stride)

    def decode(self, cls: np.ndarray, reg: np.ndarray) -> Candidates:
        """Decode cls [1, 2, S, S], reg [1, 4, S, S] (l, t, r, b) into Candidates."""
        size = cls.shape[-1]
        px, py = point_grid(size, self.stride)
        ltrb = reg.reshape(4, -1)
        x1 = px - ltrb[0]
        y1 = py - ltrb[1]
        x2 = px + ltrb[2]
        y2 = py + ltrb[3]
        boxes = np.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1])
        return _candidates(cls, boxes, cosine_window(size))


@lru_cache(maxsize=16)
def anchor_boxes(size: int, stride: int, ratios: Tuple[float, ...],
                 scales: Tuple[float, ...]) -> np.ndarray:
    """(4, K*S*S) anchors cx, cy, w, h, ordered anchor-major then row-major (pysot layout)."""
    base = []
    area = stride * stride
    for ratio in ratios:
        ws = int(np.sqrt(area / ratio))
        hs = int(ws * ratio)
        for scale in scales:
            base.append((ws * scale, hs * scale))
    count = len(base)
    px, py = point_grid(size, stride)
    wh = np.repeat(np.asarray(base, dtype=np.float32), size * size, axis=0)
    return np.stack([np.tile(px, count), np.tile(py, count), wh[:, 0], wh[:, 1]])


class AnchorDecoder:
    """SiamRPN++ anchor decoder (pysot parameterisation)."""

    def __init__(self, stride: int, anchors: AnchorSpec):
        self.stride = int(stride)
        self.anchors = anchors

    def decode(self, cls: np.ndarray, reg: np.ndarray) -> Candidates:
        """Decode cls [1, 2K, S, S], reg [1, 4K, S, S] into Candidates (K*S*S of them)."""
        size = cls.shape[-1]
        k = self.anchors.count
        if cls.shape[1] != 2 * k or reg.shape[1] != 4 * k:
            raise ValueError(f'anchor head outputs {cls.shape}/{reg.shape} do not match '
                             f'{k} anchors per cell')
        anchor = anchor_boxes(size, self.stride, self.anchors.ratios, self.anchors.scales)
        delta = reg.reshape(4, -1)
        boxes = np.stack([delta[0] * anchor[2] + anchor[0],
                          delta[1] * anchor[3] + anchor[1],
                          np.exp(delta[2]) * anchor[2],
                          np.exp(delta[3]) * anchor[3]])
        return _candidates(cls, boxes, cosine_window(size, k))


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


def _padded_size(w, h):
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


@dataclass(frozen=True)
class Selection:
    """The chosen candidate: index, its raw score, its penalty and penalised score map."""

    index: int
    score: float
    penalty: float
    pscore: np.ndarray


def select_candidate(cands: Candidates, target_w: float, target_h: float,
                     penalty_k: float, window_influence: float) -> Selection:
    """
    Scale / aspect-ratio change penalty and cosine window, then the arg-max.

    ``target_w``/``target_h`` are the current target size in search-crop pixels.
    """
    w, h = cands.boxes[2], cands.boxes[3]
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        s_c = _change(_padded_size(w, h) / _padded_size(target_w, target_h))
        r_c = _change((target_w / target_h) / (w / h))
        penalty = np.exp(-(r_c * s_c - 1.0) * penalty_k)
        penalty[~np.isfinite(penalty)] = 0.0     # degenerate (zero-size) candidates
    pscore = penalty * cands.scores
    pscore = pscore * (1.0 - window_influence) + cands.window * window_influence
    usable = np.isfinite(cands.boxes).all(axis=0)
    if not usable.all():                          # overflowing sizes can never be chosen
        pscore = np.where(usable, pscore, -np.inf)
    best = int(np.argmax(pscore))
    return Selection(best, float(cands.scores[best]), float(penalty[best]), pscore)


def make_decoder(spec):
    """Return the decoder a model spec asks for."""
    if spec.decoder == 'anchor':
        return AnchorDecoder(spec.stride, spec.anchors)
    return AnchorFreeDecoder(spec.stride)
