"""
Which received frame to track next: the live-stream policy of the tracker node, ROS-free.

Frames are kept in arrival order in a ring buffer bounded in count and in bytes, so a SetTarget
request can name a recent frame by its stamp. While tracking, only the newest frame is tracked
(a frame replaced by a newer one before the tracker got to it is counted as skipped); after a
target is set on an older buffered frame, the tracker first catches up over the frames that
arrived after it, oldest first, then returns to the newest-frame policy.

Order is arrival order, never the stamp: zero, repeated, backwards or far-future stamps are
tracked like any other frame (the stamp only serves to find a frame for SetTarget). The class
is not thread-safe; the node calls it under its own lock.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Deque, List, Optional


@dataclasses.dataclass(frozen=True)
class BufferedFrame:
    """
    One received frame: arrival index (0, 1, ...), stamp in ns, size, payload, arrival time.

    ``repeat`` is set on a frame handed out a second time (a catch-up after a new target
    re-tracks frames the previous target already went through).
    """

    index: int
    stamp_ns: int
    nbytes: int
    payload: Any
    received: float = 0.0
    repeat: bool = False


class FrameScheduler:
    """Ring buffer of received frames plus the choice of the next frame to track."""

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        """
        Keep at most ``capacity`` frames and ``max_bytes`` bytes (0 = no byte limit).

        The newest frame is always kept, whatever its size.
        """
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        if max_bytes < 0:
            raise ValueError(f'max_bytes must be >= 0, got {max_bytes}')
        self.capacity = int(capacity)
        self.max_bytes = int(max_bytes)
        self._frames: Deque[BufferedFrame] = collections.deque()
        self._bytes = 0
        self._next_index = 0
        self._pending: Optional[BufferedFrame] = None   # newest frame not yet handed out
        self._last_index = -1        # newest frame handed out (or the target's frame)
        self._tracking = False
        self._catchup_left = 0
        self.skipped = 0   # frames after the target's frame that were never tracked
        self.reprocessed = 0   # frames handed out again (catch-up over already tracked ones)
        self._max_handed = -1

    # --- receiving ------------------------------------------------------------------------

    def push(self, payload: Any, stamp_ns: int, nbytes: int = 0,
             received: float = 0.0) -> BufferedFrame:
        """Store a newly received frame (``received``: its arrival time); it is the newest."""
        frame = BufferedFrame(self._next_index, int(stamp_ns), int(nbytes), payload, received)
        self._next_index += 1
        self._pending = frame
        self._frames.append(frame)
        self._bytes += frame.nbytes
        while len(self._frames) > self.capacity or (
                self.max_bytes and self._bytes > self.max_bytes and len(self._frames) > 1):
            self._bytes -= self._frames.popleft().nbytes
        return frame

    @property
    def frames(self) -> List[BufferedFrame]:
        """Return the buffered frames, oldest first (a copy)."""
        return list(self._frames)

    @property
    def buffered_bytes(self) -> int:
        """Return the bytes of the buffered frames (as given to push)."""
        return self._bytes

    def newest(self) -> Optional[BufferedFrame]:
        """Return the last frame received, or None."""
        return self._frames[-1] if self._frames else None

    def nearest(self, stamp_ns: int) -> Optional[BufferedFrame]:
        """Return the buffered frame whose stamp is closest to ``stamp_ns`` (newest on ties)."""
        best = None
        for frame in self._frames:
            if best is None or abs(frame.stamp_ns - stamp_ns) <= abs(best.stamp_ns - stamp_ns):
                best = frame
        return best

    # --- tracking -------------------------------------------------------------------------

    @property
    def tracking(self) -> bool:
        """Return True between start() and stop()."""
        return self._tracking

    @property
    def catching_up(self) -> bool:
        """Return True while the frames after the target's frame are being worked off."""
        return self._catchup_left > 0

    def start(self, frame: BufferedFrame, catchup_limit: Optional[int] = None) -> None:
        """
        Set the target on ``frame``: track the frames after it, then the newest ones.

        At most ``catchup_limit`` frames (default: the buffer capacity) are caught up; then the
        scheduler jumps to the newest frame and counts the ones in between as skipped.
        """
        self._tracking = True
        self._last_index = frame.index
        later = sum(1 for f in self._frames if f.index > frame.index)
        self._catchup_left = (self.capacity if catchup_limit is None else catchup_limit
                              ) if later else 0
        if self._pending is not None and self._pending.index <= frame.index:
            self._pending = None

    def stop(self) -> None:
        """No target any more: nothing to track."""
        self._tracking = False
        self._catchup_left = 0
        self._pending = None

    def next_frame(self) -> Optional[BufferedFrame]:
        """Return the next frame to track, or None (not tracking, or nothing new)."""
        if not self._tracking:
            return None
        if self._catchup_left > 0:
            later = [f for f in self._frames if f.index > self._last_index]
            if later:
                self._catchup_left -= 1
                return self._hand_out(later[0])
            self._catchup_left = 0
        frame, self._pending = self._pending, None
        if frame is None or frame.index <= self._last_index:
            return None
        return self._hand_out(frame)

    def _hand_out(self, frame: BufferedFrame) -> BufferedFrame:
        # Frames between the last tracked one and this one were never tracked: replaced by a
        # newer frame while the tracker was busy, jumped over when the catch-up budget ran
        # out, or dropped from the buffer before their turn.
        self.skipped += frame.index - self._last_index - 1
        self._last_index = frame.index
        if self._pending is not None and self._pending.index <= frame.index:
            self._pending = None
        if frame.index <= self._max_handed:
            self.reprocessed += 1
            return dataclasses.replace(frame, repeat=True)
        self._max_handed = frame.index
        return frame


class StampMonitor:
    """
    Counts frames whose stamps cannot order them: zero, not increasing, far in the future.

    Such frames are still tracked (in arrival order); the counts go to diagnostics so a
    driver without a clock, a looping bag or a bad time source is visible.
    """

    def __init__(self, future_tolerance_ns: int = 10 * 1_000_000_000) -> None:
        """Stamps more than ``future_tolerance_ns`` ahead of the local clock are 'future'."""
        self.future_tolerance_ns = int(future_tolerance_ns)
        self.zero = 0
        self.backwards = 0    # not later than the previous frame's stamp (repeats included)
        self.future = 0
        self._previous: Optional[int] = None

    def check(self, stamp_ns: int, now_ns: int) -> str:
        """
        Classify a received frame's stamp: '' (fine), 'zero', 'backwards' or 'future'.

        ``now_ns`` is the local clock; 0 (sim time before the first /clock) skips 'future'.
        """
        kind = ''
        if stamp_ns == 0:
            kind = 'zero'
            self.zero += 1
        elif now_ns > 0 and stamp_ns > now_ns + self.future_tolerance_ns:
            kind = 'future'
            self.future += 1
        elif self._previous is not None and stamp_ns <= self._previous:
            kind = 'backwards'
            self.backwards += 1
        self._previous = stamp_ns
        return kind

    @property
    def total(self) -> int:
        """Return the number of frames with a stamp that could not order them."""
        return self.zero + self.backwards + self.future

    def summary(self) -> str:
        """Return e.g. '3 zero, 1 backwards' (empty when every stamp was fine)."""
        parts = [f'{n} {name}'
                 for name, n in (('zero', self.zero), ('backwards', self.backwards),
                                 ('future', self.future))
                 if n]
        return ', '.join(parts)
