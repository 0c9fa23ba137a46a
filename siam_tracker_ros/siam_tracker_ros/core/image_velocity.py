"""Image-plane velocity of the tracked box from frame stamps (ROS-free)."""
from __future__ import annotations

from typing import Optional, Tuple

from .types import BBox

NS_PER_S = 1_000_000_000


class ImageVelocity:
    """
    Centre velocity in px/s between confident fixes, exponentially smoothed.

    ``update`` is called once per tracked frame with the box when the tracker reports the
    target (TRACKING) and None otherwise; it returns the velocity to publish (0 while the
    target is not tracked) and the number of frames since the last fix. A stamp that does not
    move forward (zero, repeated, backwards) gives no velocity measurement: the smoothed value
    is kept and the fix moves to the new position.
    """

    def __init__(self, smoothing: float = 0.5) -> None:
        """``smoothing``: weight of the newest measurement (1 = no smoothing), in [0, 1]."""
        self.smoothing = smoothing
        self.reset()

    @property
    def smoothing(self) -> float:
        """Weight of the newest measurement in the moving average."""
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'velocity smoothing must be in [0, 1], got {value}')
        self._smoothing = float(value)

    def reset(self) -> None:
        """Forget the previous fix (a new target)."""
        self._fix: Optional[Tuple[float, float, int]] = None
        self._velocity = (0.0, 0.0)
        self.frames_since_fix = 0

    def update(self, box: Optional[BBox], stamp_ns: int) -> Tuple[float, float]:
        """Take the box of one frame (None = not tracked); return the velocity to publish."""
        if box is None:
            self.frames_since_fix += 1
            return (0.0, 0.0)
        if self._fix is not None and stamp_ns > self._fix[2]:
            dt = (stamp_ns - self._fix[2]) / NS_PER_S
            raw = ((box.cx - self._fix[0]) / dt, (box.cy - self._fix[1]) / dt)
            a = self._smoothing
            self._velocity = (a * raw[0] + (1 - a) * self._velocity[0],
                              a * raw[1] + (1 - a) * self._velocity[1])
        self._fix = (box.cx, box.cy, int(stamp_ns))
        self.frames_since_fix = 0
        return self._velocity
