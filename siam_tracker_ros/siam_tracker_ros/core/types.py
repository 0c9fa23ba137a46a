"""Typed values shared by the whole tracker: boxes, states and per-frame results."""
from __future__ import annotations

from dataclasses import dataclass
import enum
import math
from typing import Tuple


@dataclass(frozen=True)
class BBox:
    """Axis-aligned box: float (x, y, w, h), 0-based pixel coordinates of the top-left corner."""

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def from_center(cls, cx: float, cy: float, w: float, h: float) -> 'BBox':
        """Build a box from its centre and size."""
        return cls(float(cx - w / 2.0), float(cy - h / 2.0), float(w), float(h))

    @classmethod
    def from_sequence(cls, values) -> 'BBox':
        """Build a box from any 4-element (x, y, w, h) sequence."""
        x, y, w, h = (float(v) for v in values)
        return cls(x, y, w, h)

    @property
    def cx(self) -> float:
        """Centre x."""
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        """Centre y."""
        return self.y + self.h / 2.0

    @property
    def area(self) -> float:
        """Area in square pixels (0 for a degenerate box)."""
        return max(self.w, 0.0) * max(self.h, 0.0)

    def as_tuple(self) -> Tuple[float, float, float, float]:
        """Return (x, y, w, h)."""
        return (self.x, self.y, self.w, self.h)

    def is_finite(self) -> bool:
        """Return True when no coordinate is NaN or infinite."""
        return all(math.isfinite(v) for v in self.as_tuple())

    def validation_error(self, image_width: int, image_height: int) -> str:
        """Return why this box cannot be a target in an image of that size ('' when it can)."""
        if not self.is_finite():
            return f'box {self.as_tuple()} has a NaN or infinite coordinate'
        if self.w <= 0 or self.h <= 0:
            return f'box {self.as_tuple()} has zero or negative size; give width and height > 0'
        if (self.x >= image_width or self.y >= image_height
                or self.x + self.w <= 0 or self.y + self.h <= 0):
            return (f'box {self.as_tuple()} lies outside the {image_width}x{image_height} image; '
                    'give a box that overlaps the image')
        return ''


class TrackState(enum.IntEnum):
    """Tracking state; the numbers are the TrackedObject message constants."""

    IDLE = 0
    TRACKING = 1
    LOST = 2
    SEARCHING = 3


@dataclass(frozen=True)
class TrackResult:
    """
    What the tracker says about one frame.

    ``box`` is the published box (it is not moved by low-confidence frames once long-term
    logic is on), ``score`` the raw classification score of the chosen candidate and
    ``confidence`` the calibrated confidence in [0, 1] that the target is there.
    """

    box: BBox
    score: float
    state: TrackState
    confidence: float

    @property
    def found(self) -> bool:
        """Return the tracker's own verdict that the target is visible."""
        return self.state == TrackState.TRACKING
