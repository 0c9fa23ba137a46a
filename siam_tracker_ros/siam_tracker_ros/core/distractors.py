"""
Distractor memory: where strong look-alikes of the target were seen, in image pixels.

After DaSiamRPN's distractor-aware idea, but positional: on frames where the target is surely
in its box the strong secondary peaks of the score map (local maxima away from the target) are
remembered; a later candidate that sits on a remembered distractor loses part of its score and
confidence.
An exact copy of the target cannot be told apart by appearance, only by where it is, so the
memory keeps positions. A distractor the target itself comes to cover is forgotten (one seen on
several frames only by a confident box, or by one it lies inside).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

_NEIGHBOURS = np.ones((3, 3), np.uint8)


def _side(size: Tuple[float, float]) -> float:
    """Return the geometric-mean side of a (width, height)."""
    return math.sqrt(max(size[0] * size[1], 0.0))


class DistractorMemory:
    """Positions of remembered distractors with the frame they were last seen on."""

    def __init__(self, config):
        """Read a DistractorConfig."""
        self.items: List[List[float]] = []  # [x, y, last_seen_frame, frames_seen]
        self.set_config(config)

    def set_config(self, config) -> None:
        """Take new settings (run-time change)."""
        self.ratio = config.ratio
        self.penalty = config.penalty
        self.memory = config.memory

    def clear(self) -> None:
        """Forget every distractor."""
        self.items = []

    @staticmethod
    def secondary_peaks(score_map: np.ndarray, row: int, col: int, radius: int,
                        ratio: float, limit: int = 3) -> List[Tuple[int, int]]:
        """
        Return the cells (row, col) of the local maxima that qualify as distractors.

        They score at least ``ratio`` times the peak and lie more than ``radius`` cells from
        it and from each other.
        """
        peak = score_map[row, col]
        values = np.asarray(score_map, dtype=np.float32)
        # A cell is a local maximum when it equals the maximum of its 3x3 neighbourhood
        # (cv2.dilate takes that maximum over the cells inside the map only).
        local = values >= cv2.dilate(values, _NEIGHBOURS)
        rows, cols = np.nonzero(local & (values >= ratio * peak))
        order = np.argsort(-values[rows, cols], kind='stable')
        chosen = [(row, col)]
        out = []
        for k in order:
            r, c = int(rows[k]), int(cols[k])
            if all(max(abs(r - a), abs(c - b)) > radius for a, b in chosen):
                chosen.append((r, c))
                out.append((r, c))
                if len(out) >= limit:
                    break
        return out

    @staticmethod
    def away_from(points: Sequence[Tuple[float, float]], target: Tuple[float, float],
                  size: Tuple[float, float]) -> List[Tuple[float, float]]:
        """
        Return the points farther from ``target`` than one target size (width, height).

        Farther along either axis than the larger of the box's side on that axis and its
        geometric-mean side. A peak nearer than that is the target's own response: its
        shoulder, a masked-target probe that found the target's edge, or the far end of a
        long target (a diver, a walker) whose box covers only part of it.
        """
        side = _side(size)
        reach_x, reach_y = max(size[0], side), max(size[1], side)
        return [(x, y) for x, y in points
                if abs(x - target[0]) > reach_x or abs(y - target[1]) > reach_y]

    def observe(self, points: Sequence[Tuple[float, float]],
                target: Optional[Tuple[float, float]], size: Tuple[float, float],
                frame: int, confident: bool = True) -> None:
        """
        Fold in the distractor positions seen on a frame.

        ``target`` is where the target surely was on it, None when it was not seen (while
        searching); ``size`` is the target's (width, height). Remembered distractors within
        one target size of it (``away_from``) are forgotten: all of them when the box is
        ``confident``, else those seen on one frame and those inside the target's box. A
        look-alike seen on several frames stands there; beside the target it keeps the
        confidence down, and the target's strong peak beside it does not show that it is gone.
        It cannot stand inside the box while the box is on the target.
        """
        merge = 0.75 * _side(size)
        for x, y in points:
            for item in self.items:
                if (item[0] - x) ** 2 + (item[1] - y) ** 2 < merge ** 2:
                    if item[2] != frame:
                        item[3] += 1
                    item[0], item[1], item[2] = x, y, frame
                    break
            else:
                self.items.append([x, y, frame, 1])
        self.items = [it for it in self.items
                      if frame - it[2] <= self.memory
                      and (target is None or self.away_from([it[:2]], target, size)
                           or (it[3] > 1 and not confident
                               and not self._inside(it, target, size)))]

    @staticmethod
    def _inside(point, center: Tuple[float, float], size: Tuple[float, float]) -> bool:
        """Tell whether ``point`` lies inside the box at ``center`` with ``size`` (w, h)."""
        return (abs(point[0] - center[0]) <= 0.5 * size[0]
                and abs(point[1] - center[1]) <= 0.5 * size[1])

    def factor(self, xs: np.ndarray, ys: np.ndarray, target_size: float, frame: int
               ) -> np.ndarray:
        """Per-candidate multiplier in [1 - penalty, 1] for candidates at image (xs, ys)."""
        out = np.ones_like(np.asarray(xs, dtype=np.float64))
        sigma = 0.5 * target_size
        for x, y, seen, _ in self.items:
            if frame - seen > self.memory:
                continue
            d2 = (xs - x) ** 2 + (ys - y) ** 2
            out = np.minimum(out, 1.0 - self.penalty * np.exp(-0.5 * d2 / sigma ** 2))
        return out
