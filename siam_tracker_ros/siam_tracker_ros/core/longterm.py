"""
Long-term state: TRACKING -> LOST -> SEARCHING -> TRACKING, and the search-window plan.

``LongTermState.step`` is the state machine, in one place: a frame without evidence that the
target is there (the controller decides what counts, core/tracker.py) is LOST and the published
box stays where the target was last found; after ``lt_lost_frames`` such frames in a row the
tracker is SEARCHING. A found frame is TRACKING again.

Searching follows DaSiamRPN's local-to-global idea: each searching frame runs the window at
the predicted position (the controller adds one on the target's own path and one for it
larger or smaller) plus at most ``lt_tiles_per_frame`` windows of a tiling of the whole
frame, taken nearest-first from where the target was lost, but only within a reach that grows
with the frames lost and with the target's speed (the controller computes it). The searched
area so grows outward step by step; whole-frame coverage comes last, bounded per frame, and
starts over once every window was visited.
"""
from __future__ import annotations

import bisect
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
    """The state machine and the search plan (reset on every init)."""

    state: TrackState = TrackState.IDLE
    low_frames: int = 0
    held_box: Optional[BBox] = None
    sure_frame: int = 0
    appearance: float = 1.0
    tiles: List[Point] = field(default_factory=list)
    distances: List[float] = field(default_factory=list)
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
        self.held_box = box
        self.tiles = []
        self.distances = []
        self.cursor = 0

    @property
    def lost(self) -> bool:
        """Whether the last frame did not find the target (LOST or SEARCHING)."""
        return self.state in (TrackState.LOST, TrackState.SEARCHING)

    def step(self, found: bool, box: Optional[BBox], lost_frames: int) -> TrackState:
        """
        Advance by one tracked frame and return the new state.

        ``found``: the frame found the target at ``box`` (which becomes the held box);
        otherwise the held box stays and the frame counts towards SEARCHING.
        """
        if found:
            self.low_frames = 0
            self.held_box = box
            self.state = TrackState.TRACKING
        else:
            self.low_frames += 1
            self.state = (TrackState.SEARCHING if self.low_frames >= lost_frames
                          else TrackState.LOST)
        return self.state

    def plan_search(self, width: int, height: int, window: float, origin: Point) -> None:
        """Lay out the search windows once, when searching starts."""
        self.tiles = tile_centers(width, height, window, origin)
        self.distances = [math.hypot(x - origin[0], y - origin[1]) for x, y in self.tiles]
        self.cursor = 0

    def next_tiles(self, count: int, reach: float) -> List[Point]:
        """
        Return this frame's windows of the plan: the next ones nearest-first within ``reach``.

        At most ``count``; the plan waits for the reach to grow when every window within it
        was visited, and starts over from the nearest after the last one.
        """
        if self.cursor >= len(self.tiles):
            self.cursor = 0
        limit = bisect.bisect_right(self.distances, reach)
        out: List[Point] = []
        while len(out) < count and self.cursor < limit:
            out.append(self.tiles[self.cursor])
            self.cursor += 1
        return out
