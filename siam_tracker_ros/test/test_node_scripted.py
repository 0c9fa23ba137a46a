"""
The real tracker node on the scripted backend: frame scheduling over rclpy, no ../shared.

The node runs as a subprocess with ``backend:=scripted_backend:create`` (the registry's plugin
route, this folder on its PYTHONPATH) and a generated scripted model directory. The scripted
backend waits inside ``track`` while a hold file exists, so the test keeps the tracker busy on a
frame while it publishes more: which frames the node tracks then follows from its scheduling
policy alone, not from how fast this machine is.
"""
import os
from pathlib import Path
import time

import pytest
from ros_helpers import (diag_values, find_status, python_module_cmd, require_interfaces,
                         ros_env, RosClient)
import scripted_backend as sb

require_interfaces()

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402, I100
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from siam_tracker_interfaces.msg import TrackedObject  # noqa: E402
from siam_tracker_interfaces.srv import SetTarget  # noqa: E402
from siam_tracker_ros.ros import conversions as conv  # noqa: E402
from siam_tracker_ros.tooling.isolation import start_process, stop_process  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

NODE = '/siam_scripted'
TOPIC = '/scripted/image'
TEST_DIR = Path(__file__).resolve().parent
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE)
# The target moves 8 px per frame: frames a step apart are told apart by the box alone.
SCENE = [sb.Actor(20 + 8 * t, 100) for t in range(20)]
FRAMES = [sb.render([a]) for a in SCENE]


class Graph:
    """The scripted node, this process's client node and what the test published."""

    def __init__(self, proc, client: RosClient, log: Path, hold: Path) -> None:
        self.proc, self.client, self.log, self.hold = proc, client, log, hold
        self.image_pub = client.node.create_publisher(Image, TOPIC, RELIABLE)
        self.tracked = client.collect(TrackedObject, f'{NODE}/tracked', 100)
        self.diagnostics = client.collect(DiagnosticArray, '/diagnostics', 100)
        self._last_ns = 0

    def publish(self, index: int) -> Header:
        """Publish FRAMES[index] stamped now (after every earlier stamp of this method)."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1000)
        return self.publish_at(index, self._last_ns)

    def publish_at(self, index: int, stamp_ns: int) -> Header:
        """Publish FRAMES[index] stamped ``stamp_ns``."""
        header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id='scripted_cam')
        self.image_pub.publish(conv.bgr_to_image(FRAMES[index], header, 'bgr8'))
        return header

    def values(self, predicate=lambda v: True, timeout: float = 15.0, missing='fail'):
        """Diagnostics values of the node, the next ones satisfying ``predicate``."""
        start = len(self.diagnostics)

        def ok(array):
            status = find_status(array, NODE)
            return status is not None and predicate(diag_values(status))
        msg = self.diagnostics.wait_for(ok, timeout=timeout, start=start)
        if msg is None and missing != 'fail':
            return missing
        assert msg is not None, f'no such diagnostics from {NODE}; log: {self.log}'
        return diag_values(find_status(msg, NODE))

    def publish_received(self, index: int, stamp_ns: int) -> Header:
        """Publish FRAMES[index] at ``stamp_ns`` and wait until the node has received it."""
        received = int(self.values()['frames_received']) + 1
        header = self.publish_at(index, stamp_ns)
        self.values(lambda v: int(v['frames_received']) >= received)
        return header

    def set_target(self, index: int, stamp) -> SetTarget.Response:
        request = SetTarget.Request()
        request.box.x, request.box.y, request.box.width, request.box.height = SCENE[index].box
        request.stamp = stamp
        return self.client.call(SetTarget, f'{NODE}/set_target', request)

    def tracked_of(self, target_id: int, stamp, timeout: float = 15.0) -> TrackedObject:
        msg = self.tracked.wait_for(
            lambda m: m.target_id == target_id and m.header.stamp == stamp, timeout=timeout)
        assert msg is not None, f'no TrackedObject for {stamp}; log: {self.log}'
        return msg


@pytest.fixture(scope='module')
def graph(ros_domain, tmp_path_factory):
    root = tmp_path_factory.mktemp('scripted-node')
    hold = root / 'hold'
    model = sb.write_model_dir(root / 'model', hold_file=hold)
    env = ros_env(ros_domain)
    env['PYTHONPATH'] = os.pathsep.join([str(TEST_DIR), env.get('PYTHONPATH', '')])
    log = root / 'node.log'
    proc = start_process(python_module_cmd(
        'siam_tracker_ros.ros.tracker_node', '-r', f'__node:={NODE[1:]}', '-r',
        f'image:={TOPIC}', '-p', f'model_path:={model}', '-p', 'backend:=scripted_backend:create',
        '-p', 'qos_reliability:=reliable', '-p', 'diagnostics_period:=0.2'), env, log)
    client = RosClient('scripted_node_test_client')
    g = Graph(proc, client, log, hold)
    try:
        values = None
        deadline = time.monotonic() + 60.0
        while values is None:
            assert proc.poll() is None, f'the node exited: {log.read_text()[-3000:]}'
            assert time.monotonic() < deadline, f'no diagnostics from {NODE}; log: {log}'
            values = g.values(lambda v: v.get('model_state') in ('ready', 'failed'), 1.0, None)
        assert values['model_state'] == 'ready', log.read_text()[-3000:]
        assert values['backend'] == 'scripted'
        while g.image_pub.get_subscription_count() == 0:   # the node's image subscription
            assert time.monotonic() < deadline, 'the node never subscribed to the images'
            time.sleep(0.05)
        yield g
    finally:
        hold.unlink(missing_ok=True)
        client.close()
        stop_process(proc)


def centre_error(msg: TrackedObject, index: int) -> float:
    a = SCENE[index]
    return max(abs(msg.box.x - a.x), abs(msg.box.y - a.y))


def test_catch_up_over_buffered_frames_then_only_the_newest(graph):
    base = graph.values()
    # Idle: frames 0-9 only land in the node's buffer.
    headers = []
    for i in range(10):
        headers.append(graph.publish(i))
        time.sleep(0.1)
    received = int(base['frames_received']) + 10
    graph.values(lambda v: int(v['frames_received']) >= received)
    # The target is set longer after the last image than image_timeout (1 s): the buffered
    # frames still to catch up are no camera outage, and neither is the time just after them.
    time.sleep(1.3)
    response = graph.set_target(3, headers[3].stamp)
    assert response.success, response.message
    assert response.stamp == headers[3].stamp
    tid = response.target_id

    # The target was set on frame 3: the node catches up over 4-9, oldest first, each once.
    graph.tracked_of(tid, headers[9].stamp)
    time.sleep(0.6)   # more than one period of the outage check (no_image_rate 2 Hz)
    mine = [m for m in graph.tracked.messages if m.target_id == tid]
    assert [m.header.stamp for m in mine] == [h.stamp for h in headers[3:10]]
    for msg, index in zip(mine, range(3, 10)):
        assert msg.state == TrackedObject.TRACKING, index
        assert centre_error(msg, index) < 3.0, (index, msg.box)

    # Newest-frame policy: the tracker is held inside frame 10 while 11-14 arrive; once it is
    # free it takes 14, the newest, and 11-13 are skipped (counted, never tracked).
    before = graph.values(lambda v: int(v['frames_processed'])
                          >= int(base['frames_processed']) + 6)
    graph.hold.touch()
    try:
        headers.append(graph.publish(10))
        marker = Path(str(graph.hold) + '.held')
        deadline = time.monotonic() + 15.0
        while not marker.exists():
            assert time.monotonic() < deadline, 'the tracker never started frame 10'
            time.sleep(0.01)
        for i in range(11, 15):
            headers.append(graph.publish(i))
            time.sleep(0.1)
        graph.values(lambda v: int(v['frames_received']) >= received + 5)
    finally:
        graph.hold.unlink()
    last = graph.tracked_of(tid, headers[14].stamp)
    mine = [m for m in graph.tracked.messages if m.target_id == tid]
    assert [m.header.stamp for m in mine[7:]] == [headers[10].stamp, headers[14].stamp]
    assert last.state == TrackedObject.TRACKING and centre_error(last, 14) < 3.0
    after = graph.values(lambda v: int(v['frames_processed'])
                         >= int(before['frames_processed']) + 2)
    assert int(after['frames_skipped']) - int(before['frames_skipped']) == 3
    assert int(after['frames_processed']) - int(before['frames_processed']) == 2
    assert graph.client.call(Trigger, f'{NODE}/stop', Trigger.Request()).success


S = 1_000_000_000


def _stamped_run(graph, stamps):
    """Target on frame 0 (stamped stamps[0]), then frames 1.. one at a time; the results."""
    graph.hold.unlink(missing_ok=True)
    graph.publish_received(0, stamps[0])
    response = graph.set_target(0, conv.ns_to_stamp(0))   # zero stamp: the newest frame
    assert response.success, response.message
    tid = response.target_id
    for index, stamp in enumerate(stamps[1:], 1):
        count = sum(1 for m in graph.tracked.messages if m.target_id == tid)
        graph.publish_at(index, stamp)
        got = graph.tracked.wait_for(
            lambda m: sum(1 for k in graph.tracked.messages if k.target_id == tid) > count,
            timeout=10.0)
        assert got is not None, f'frame {index} (stamp {stamp}) was not tracked'
    mine = [m for m in graph.tracked.messages if m.target_id == tid]
    assert graph.client.call(Trigger, f'{NODE}/stop', Trigger.Request()).success
    return mine


@pytest.mark.parametrize('case', ['all_zero', 'backwards', 'one_hour_ahead', 'bag_loop'])
def test_bad_stamps_are_tracked_in_arrival_order_and_reported(graph, case):
    """Stamps only order frames: zero, backwards, +1 h and a looping bag keep tracking."""
    now = time.time_ns()
    n = 16
    stamps = {
        'all_zero': [0] * n,
        'backwards': [now + k * S // 30 for k in range(8)] + [
            now - 10 * S + k * S // 30 for k in range(n - 8)],
        'one_hour_ahead': [now + k * S // 30 + (3600 * S if k == 5 else 0) for k in range(n)],
        'bag_loop': [now + k * S // 30 for k in range(10)] + [
            now - 100 * S + k * S // 30 for k in range(n - 10)],
    }[case]
    before = graph.values()
    mine = _stamped_run(graph, stamps)
    assert len(mine) == n   # the init frame and one message for every frame after it
    assert [conv.stamp_to_ns(m.header.stamp) for m in mine] == stamps
    for index, msg in enumerate(mine):
        assert msg.state == TrackedObject.TRACKING, (case, index)
        assert centre_error(msg, index) < 3.0, (case, index, msg.box)
    expect = {'all_zero': ('stamps_zero', n), 'backwards': ('stamps_backwards', 1),
              'one_hour_ahead': ('stamps_future', 1), 'bag_loop': ('stamps_backwards', 1)}
    key, count = expect[case]
    after = graph.values(lambda v: int(v[key]) >= int(before[key]) + count)
    assert int(after[key]) - int(before[key]) == count
    if case == 'one_hour_ahead':   # the frame after the +1 h one goes back in time too
        assert int(after['stamps_backwards']) - int(before['stamps_backwards']) == 1


def test_a_camera_outage_is_reported_as_lost_and_in_diagnostics(graph):
    """Images stop while a target is set: LOST at no_image_rate, frames_since_fix growing."""
    now = time.time_ns()
    header = graph.publish_received(0, now)
    response = graph.set_target(0, header.stamp)
    assert response.success, response.message
    tid = response.target_id
    for index in range(1, 4):
        header = graph.publish_at(index, now + index * S // 30)
        graph.tracked_of(tid, header.stamp)
    last_image_ns = conv.stamp_to_ns(header.stamp)
    # image_timeout is 1 s and no_image_rate 2 Hz (defaults): two LOST messages within ~2 s.
    graph.tracked.wait_for(lambda m: m.target_id == tid and m.frames_since_fix >= 2,
                           timeout=10.0)
    outage = [m for m in graph.tracked.messages
              if m.target_id == tid and conv.stamp_to_ns(m.header.stamp) > last_image_ns]
    assert len(outage) >= 2
    assert all(m.state == TrackedObject.LOST and m.confidence == 0.0 for m in outage)
    assert [m.frames_since_fix for m in outage[:2]] == [1, 2]
    assert abs(outage[0].box.x - SCENE[3].x) < 3.0   # the last known box is held
    status = graph.diagnostics.wait_for(
        lambda a: find_status(a, NODE) is not None and 'no image for' in find_status(
            a, NODE).message, timeout=5.0)
    assert status is not None and find_status(status, NODE).level == DiagnosticStatus.WARN
    assert graph.client.call(Trigger, f'{NODE}/stop', Trigger.Request()).success


def test_a_box_below_min_target_size_is_refused_with_the_reason(graph):
    request = SetTarget.Request()
    request.box.x, request.box.y, request.box.width, request.box.height = 50.0, 50.0, 3.0, 3.0
    response = graph.client.call(SetTarget, f'{NODE}/set_target', request)
    assert not response.success and response.code == SetTarget.Response.INVALID_BOX
    assert 'min_target_size 4' in response.message


def test_per_stage_latency_and_the_camera_info_warning(graph):
    values = graph.values()
    for stage in ('receive', 'wait', 'convert', 'crop', 'network', 'policies', 'publish'):
        p50, p99 = (float(values[f'latency_{stage}_ms_p{q}']) for q in (50, 99))
        assert 0.0 <= p50 <= p99, (stage, p50, p99)
    assert float(values['latency_network_ms_p50']) > 0.0
    # This graph never publishes CameraInfo: the node said so once.
    assert graph.log.read_text().count('no CameraInfo on') == 1


def test_a_stamp_that_never_arrived_is_explained(graph):
    """STAMP_NOT_FOUND between two buffered frames: it never reached the node."""
    now = time.time_ns()
    for k in (0, 2):
        graph.publish_at(k, now + k * S)
    graph.values(lambda v: int(v['frames_buffered']) >= 2)
    time.sleep(0.3)
    response = graph.set_target(1, conv.ns_to_stamp(now + S))
    assert not response.success and response.code == SetTarget.Response.STAMP_NOT_FOUND
    assert 'never reached the node' in response.message
    assert 'nearest buffered frame' in response.message and '1000.0 ms' in response.message


def test_node_stops_cleanly(graph):
    assert graph.proc.poll() is None
    assert stop_process(graph.proc) == 0, graph.log.read_text()[-2000:]
    assert 'Traceback' not in graph.log.read_text()
