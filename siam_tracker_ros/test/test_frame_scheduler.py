"""The node's live-stream policy (core.frame_scheduler) and image velocity, without ROS."""
import pytest

from siam_tracker_ros.core.frame_scheduler import FrameScheduler
from siam_tracker_ros.core.image_velocity import ImageVelocity
from siam_tracker_ros.core.types import BBox

S = 1_000_000_000


def _push(sched, n, stamp=lambda i: (i + 1) * S // 30, nbytes=0):
    return [sched.push(f'frame{k}', stamp(k), nbytes) for k in range(n)]


def _drain(sched):
    out = []
    while True:
        frame = sched.next_frame()
        if frame is None:
            return out
        out.append(frame.payload)


def test_nothing_is_tracked_without_a_target():
    sched = FrameScheduler(5)
    _push(sched, 3)
    assert sched.next_frame() is None
    assert sched.skipped == 0


def test_only_the_newest_frame_is_tracked_and_the_replaced_ones_are_counted():
    sched = FrameScheduler(10)
    frames = _push(sched, 1)
    sched.start(frames[0])
    assert sched.next_frame() is None           # nothing after the target's frame yet
    _push(sched, 4, stamp=lambda k: (k + 2) * S)  # frame0..3 of the new batch arrive at once
    assert _drain(sched) == ['frame3']           # only the newest
    assert sched.skipped == 3                    # the three it replaced
    sched.push('late', 9 * S)
    assert _drain(sched) == ['late']
    assert sched.skipped == 3


def test_a_target_on_an_old_frame_catches_up_over_every_later_frame_in_order():
    sched = FrameScheduler(10)
    frames = _push(sched, 6)
    sched.start(frames[1])
    assert sched.catching_up
    got = [sched.next_frame().payload]
    sched.push('new', 99 * S)                   # arrives during the catch-up: queued behind
    got += _drain(sched)
    assert got == ['frame2', 'frame3', 'frame4', 'frame5', 'new']
    assert sched.skipped == 0
    assert not sched.catching_up


def test_the_catch_up_budget_then_jumps_to_the_newest_frame():
    sched = FrameScheduler(10)
    frames = _push(sched, 8)
    sched.start(frames[0], catchup_limit=3)
    assert _drain(sched) == ['frame1', 'frame2', 'frame3', 'frame7']
    assert sched.skipped == 3                    # frame4..6 jumped over


def test_stamps_never_gate_tracking_only_arrival_order_counts():
    """All-zero, repeated, backwards and far-future stamps are tracked in arrival order."""
    for stamps in ([0, 0, 0, 0], [5 * S, 5 * S, 5 * S, 5 * S], [9 * S, 8 * S, 7 * S, 6 * S],
                   [1 * S, 3600 * S, 2 * S, 3 * S]):
        sched = FrameScheduler(10)
        first = sched.push('f0', stamps[0])
        sched.start(first)
        tracked = []
        for k, stamp in enumerate(stamps[1:], 1):
            sched.push(f'f{k}', stamp)
            tracked += _drain(sched)
        assert tracked == ['f1', 'f2', 'f3'], stamps


def test_a_bag_loop_jumping_back_keeps_tracking():
    sched = FrameScheduler(10)
    first = sched.push('f0', 100 * S)
    sched.start(first)
    tracked = []
    for k, stamp in enumerate([101 * S, 102 * S, 1 * S, 2 * S], 1):   # the bag restarted
        sched.push(f'f{k}', stamp)
        tracked += _drain(sched)
    assert tracked == ['f1', 'f2', 'f3', 'f4']


def test_buffer_is_bounded_in_frames_and_bytes_and_keeps_the_newest():
    sched = FrameScheduler(4, max_bytes=250)
    _push(sched, 10, nbytes=100)
    assert [f.payload for f in sched.frames] == ['frame8', 'frame9']   # 200 <= 250 bytes
    assert sched.buffered_bytes == 200
    sched.push('huge', 10 * S, nbytes=10_000)
    assert [f.payload for f in sched.frames] == ['huge']   # the newest stays, whatever its size
    by_count = FrameScheduler(3)
    _push(by_count, 10)
    assert [f.payload for f in by_count.frames] == ['frame7', 'frame8', 'frame9']


def test_frames_dropped_from_the_buffer_during_a_catch_up_count_as_skipped():
    sched = FrameScheduler(3)
    frames = _push(sched, 3)
    sched.start(frames[0])
    _push(sched, 3, stamp=lambda k: (k + 10) * S)   # frame0..2 of the batch evict the old ones
    got = _drain(sched)
    assert got == ['frame0', 'frame1', 'frame2']
    assert sched.skipped == 2                       # the old frame1, frame2 fell out unseen


def test_nearest_finds_a_frame_by_stamp_and_stop_ends_tracking():
    sched = FrameScheduler(10)
    _push(sched, 5, stamp=lambda k: k * S)
    assert sched.nearest(int(2.4 * S)).payload == 'frame2'
    assert sched.nearest(int(2.5 * S)).payload == 'frame3'   # the newer on a tie
    assert sched.newest().payload == 'frame4'
    sched.start(sched.nearest(0))
    sched.stop()
    assert sched.next_frame() is None and not sched.tracking


@pytest.mark.parametrize('capacity,max_bytes', [(0, 0), (5, -1)])
def test_bad_sizes_are_refused(capacity, max_bytes):
    with pytest.raises(ValueError):
        FrameScheduler(capacity, max_bytes)


def test_image_velocity_smooths_measurements_and_counts_frames_since_fix():
    vel = ImageVelocity(smoothing=0.5)
    assert vel.update(BBox(0, 0, 10, 10), 0) == (0.0, 0.0)            # first fix: unknown
    assert vel.update(BBox(10, 0, 10, 10), S // 2) == (10.0, 0.0)     # 20 px/s, half weight
    assert vel.update(BBox(20, 10, 10, 10), S) == (15.0, 10.0)        # (20, 20) half weight
    assert vel.update(None, 2 * S) == (0.0, 0.0) and vel.frames_since_fix == 1
    assert vel.update(None, 3 * S) == (0.0, 0.0) and vel.frames_since_fix == 2
    vel.reset()
    assert vel.update(BBox(50, 50, 10, 10), 4 * S) == (0.0, 0.0) and vel.frames_since_fix == 0


def test_image_velocity_ignores_stamps_that_do_not_move_forward():
    vel = ImageVelocity(smoothing=1.0)
    vel.update(BBox(0, 0, 10, 10), 10 * S)
    assert vel.update(BBox(10, 0, 10, 10), 11 * S) == (10.0, 0.0)
    assert vel.update(BBox(500, 0, 10, 10), 11 * S) == (10.0, 0.0)   # repeated stamp: kept
    assert vel.update(BBox(510, 0, 10, 10), 5 * S) == (10.0, 0.0)    # backwards: kept
    assert vel.update(BBox(520, 0, 10, 10), 6 * S) == (10.0, 0.0)    # from the new fix
    with pytest.raises(ValueError):
        vel.smoothing = 1.5


def test_stamp_monitor_counts_what_cannot_order_frames():
    from siam_tracker_ros.core.frame_scheduler import StampMonitor
    mon = StampMonitor(future_tolerance_ns=10 * S)
    now = 1000 * S
    kinds = [mon.check(stamp, now) for stamp in
             (0, 0, 990 * S, 991 * S, 991 * S, 985 * S, now + 3600 * S, 992 * S)]
    assert kinds == ['zero', 'zero', '', '', 'backwards', 'backwards', 'future', 'backwards']
    assert (mon.zero, mon.backwards, mon.future, mon.total) == (2, 3, 1, 6)
    assert mon.summary() == '2 zero, 3 backwards, 1 future'
    assert StampMonitor().check(3600 * S, 0) == ''   # sim time before /clock: no 'future'


def test_a_catch_up_over_frames_already_tracked_counts_them_as_reprocessed():
    sched = FrameScheduler(10)
    frames = _push(sched, 4)
    sched.start(frames[0])
    first = _drain(sched)
    assert first == ['frame1', 'frame2', 'frame3'] and sched.reprocessed == 0
    sched.start(frames[1])          # a new target on an older frame: 2 and 3 come again
    again = []
    while True:
        frame = sched.next_frame()
        if frame is None:
            break
        again.append((frame.payload, frame.repeat))
    assert again == [('frame2', True), ('frame3', True)] and sched.reprocessed == 2
    sched.push('new', 99 * S)
    frame = sched.next_frame()
    assert (frame.payload, frame.repeat) == ('new', False) and sched.reprocessed == 2
