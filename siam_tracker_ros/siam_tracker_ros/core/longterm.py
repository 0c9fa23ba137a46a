"""
Long-term state: TRACKING -> LOST -> SEARCHING -> TRACKING, and the search-window plan.

A frame whose confidence is below ``found_threshold`` is LOST (the published box stays where
it was, the tracker keeps looking around there); after ``lt_lost_frames`` such frames in a row
the tracker is SEARCHING. Each searching
frame runs the search branch on the window at the predicted position (local) plus the next
``lt_tiles_per_frame`` windows of a tiling of the whole frame, visited nearest-first from where
the target was lost, so the searched area grows outward from the last position until it
covers the frame (local to global), then starts over. For the first ``lt_local_frames`` frames
only the tiles within two window sizes of the last position are visited.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import List, Optional, Tuple

from .types import BBox, TrackState

Point = Tuple[float, float]


def tile_centers(width: int, height: int, window: float, origin: Point,
                 overlap: float = 0.35) -> List[Point]:
    """
    Return the centres of ``window``-sided squares covering a ``width`` x ``height`` frame.

    Neighbours overlap by ``overlap`` of a side; the centres are sorted nearest-first from
    ``origin`` (ties broken by position, so the order is deterministic).
    """
    step = max(window * (1.0 - overlap), 1.0)

    def axis(length: int) -> List[float]:
        if length <= window:
            return [length / 2.0]
        count = int(math.ceil((length - window) / step)) + 1
        first, last = window / 2.0, length - window / 2.0
        return [first + (last - first) * i / (count - 1) for i in range(count)]

    points = [(x, y) for y in axis(height) for x in axis(width)]
    points.sort(key=lambda p: ((p[0] - origin[0]) ** 2 + (p[1] - origin[1]) ** 2, p[1], p[0]))
    return points


@dataclass
class LongTermState:
    """Counters of the state machine and the search plan (reset on every init)."""

    state: TrackState = TrackState.IDLE
    low_frames: int = 0
    search_frames: int = 0
    held_box: Optional[BBox] = None
    sure_frame: int = 0
    appearance: float = 1.0
    tiles: List[Point] = field(default_factory=list)
    local_tiles: int = 0
    cursor: int = 0

    def start(self, box: BBox, frame: int = 0, appearance: float = 1.0) -> None:
        """
        Start tracking a new target from ``frame`` on.

        Also used for a re-acquired target, whose appearance similarity was ``appearance``.
        """
        self.state = TrackState.TRACKING
        self.sure_frame = frame
        self.appearance = appearance
        self.low_frames = 0
        self.search_frames = 0
        self.held_box = box
        self.tiles = []
        self.cursor = 0

    def plan_search(self, width: int, height: int, window: float, origin: Point) -> None:
        """Lay out the search windows once, when the target is lost."""
        self.tiles = tile_centers(width, height, window, origin)
        self.local_tiles = sum(1 for x, y in self.tiles
                               if math.hypot(x - origin[0], y - origin[1]) <= 2.0 * window)
        self.cursor = 0
        self.search_frames = 0

    def next_tiles(self, count: int, local_frames: int) -> List[Point]:
        """Return the global-scan windows of this searching frame."""
        limit = self.local_tiles if self.search_frames < local_frames else len(self.tiles)
        limit = max(min(limit, len(self.tiles)), 1) if self.tiles else 0
        out = []
        for _ in range(min(count, limit)):
            if self.cursor >= limit:
                self.cursor = 0
            out.append(self.tiles[self.cursor])
            self.cursor += 1
        self.search_frames += 1
        return out
