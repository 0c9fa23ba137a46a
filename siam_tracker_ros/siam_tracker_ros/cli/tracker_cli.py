r"""
siam-tracker-cli: set the target, stop, and watch a running siam_tracker node.

    siam-tracker-cli set-target X Y W H [--stamp SEC.NANOSEC] [--wait S]
    siam-tracker-cli set-target --from-gt camera/ground_truth   # box + stamp of a GT message
    siam-tracker-cli stop
    siam-tracker-cli echo [--count N] [--timeout T]

``--node`` names the tracker node (default ``siam_tracker``, relative to the namespace given with
``--ros-args -r __ns:=/NS``, or absolute like ``/drone1/siam_tracker``). ``--node`` and
``--timeout`` go before or after the subcommand. For ``echo``, ``--timeout`` is the longest
silence: ``echo --count N`` exits 3, saying why, when no message came for that long (the node
publishes only while a target is set); plain ``echo`` says so on stderr and keeps waiting.
The same actions with the stock tools:

    ros2 service call /siam_tracker/set_target siam_tracker_interfaces/srv/SetTarget \\
        "{box: {x: 120, y: 80, width: 40, height: 60}}"
    ros2 service call /siam_tracker/stop std_srvs/srv/Trigger
    ros2 topic echo /siam_tracker/tracked
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import List, Optional

EXIT_OK, EXIT_REFUSED, EXIT_TIMEOUT = 0, 1, 3


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of siam-tracker-cli."""
    parser = argparse.ArgumentParser(
        prog='siam-tracker-cli', description='Talk to a running siam_tracker node.',
        epilog='ROS arguments go after --ros-args (e.g. --ros-args -r __ns:=/drone1).')
    _add_common(parser, defaults=True)
    # The same options after the subcommand; SUPPRESS keeps the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, defaults=False)
    sub = parser.add_subparsers(dest='command', required=True)
    st = sub.add_parser('set-target', parents=[common],
                        help='start tracking the box X Y W H (pixels)')
    st.add_argument('box', nargs='*', type=float, metavar='X Y W H',
                    help='top-left corner and size in pixels of the image it was drawn on')
    st.add_argument('--stamp', default='',
                    help='stamp SEC.NANOSEC of the image the box was drawn on (default: the '
                         'newest image)')
    st.add_argument('--from-gt', metavar='TOPIC', default='',
                    help='take box and stamp from the next GroundTruth message on TOPIC')
    st.add_argument('--wait', type=float, default=0.0,
                    help='retry for up to this many seconds while the node is loading its '
                         'model or has no image yet (with --from-gt, also while it lacks the '
                         "GroundTruth message's frame, with the next message)")
    sub.add_parser('stop', parents=[common], help='stop tracking (state IDLE)')
    echo = sub.add_parser('echo', parents=[common],
                          help='print state, box and confidence of each TrackedObject')
    echo.add_argument('--count', type=int, default=0,
                      help='exit after N messages (0 = never); exit 3 when no message came for '
                           '--timeout seconds')
    echo.add_argument('--once', action='store_true', help='same as --count 1')
    return parser


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be > 0 seconds, got {text}')
    return value


def _add_common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    def default(value):
        return value if defaults else argparse.SUPPRESS
    parser.add_argument('--node', default=default('siam_tracker'),
                        help='tracker node name, relative or absolute (default: siam_tracker)')
    parser.add_argument('--timeout', type=_positive_seconds, default=default(10.0),
                        help='seconds to wait for the service; for echo, the longest silence '
                             'between messages (default: 10)')


def _service_name(node: str, name: str) -> str:
    return f'{node.rstrip("/")}/{name}'


def format_tracked(msg) -> str:
    """One line for a TrackedObject: state, id, box, confidence, stamp."""
    from siam_tracker_ros.ros.conversions import format_stamp, state_name

    b = msg.box
    bearing = ('' if math.isnan(msg.azimuth) else
               f' az={math.degrees(msg.azimuth):+.1f}deg el={math.degrees(msg.elevation):+.1f}deg')
    return (f'{format_stamp(msg.header.stamp)} {state_name(msg.state):9s} '
            f'id={msg.target_id} box=({b.x:.1f}, {b.y:.1f}, {b.width:.1f}, {b.height:.1f}) '
            f'conf={msg.confidence:.3f}{bearing}')


class _Cli:
    """A node spun from the calling thread (no background executor to tear down)."""

    def __init__(self, node, timeout: float) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.timeout = timeout
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)

    def spin_until(self, done, timeout: float) -> bool:
        """Spin until ``done()`` is true or ``timeout`` seconds passed; return done()."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.executor.spin_once(timeout_sec=min(left, 0.1))
        return True

    def call(self, client, request, timeout: float):
        deadline = time.monotonic() + timeout
        while not client.wait_for_service(timeout_sec=0.2):
            if time.monotonic() > deadline:
                return None
        future = client.call_async(request)
        self.spin_until(future.done, max(deadline - time.monotonic(), 1.0))
        return future.result() if future.done() else None

    def next_message(self, msg_type, topic: str, timeout: float,
                     wanted=lambda msg: True):
        box = []

        def keep(msg):
            if wanted(msg):
                box.append(msg)
        sub = self.node.create_subscription(msg_type, topic, keep, 10)
        try:
            return box[0] if self.spin_until(lambda: bool(box), timeout) else None
        finally:
            self.node.destroy_subscription(sub)


def _set_target(cli: _Cli, args) -> int:
    from siam_tracker_interfaces.msg import GroundTruth
    from siam_tracker_interfaces.srv import SetTarget
    from siam_tracker_ros.ros.conversions import format_stamp, parse_stamp

    name = _service_name(args.node, 'set_target')
    client = cli.node.create_client(SetTarget, name)
    # Discover the service first: a GroundTruth stamp must still be in the node's buffer.
    if not cli.spin_until(client.service_is_ready, max(args.timeout, args.wait)):
        print(f'no service {client.srv_name} (is the tracker node running?)', file=sys.stderr)
        return EXIT_TIMEOUT
    request = SetTarget.Request()
    deadline = time.monotonic() + max(args.wait, 0.0)
    if not args.from_gt:
        if len(args.box) != 4:
            print('set-target needs X Y W H (or --from-gt TOPIC)', file=sys.stderr)
            return 2
        x, y, w, h = args.box
        request.box.x, request.box.y, request.box.width, request.box.height = x, y, w, h
        if args.stamp:
            request.stamp = parse_stamp(args.stamp)
    codes = SetTarget.Response
    retry = (codes.MODEL_LOADING, codes.NO_IMAGE)
    # A GroundTruth frame the node never got (dropped in transport, or out of its buffer after
    # the model loaded) is no reason to give up: the next GroundTruth message is as good.
    retry += (codes.STAMP_NOT_FOUND,) if args.from_gt else ()
    while True:
        if args.from_gt:
            gt = cli.next_message(GroundTruth, args.from_gt,
                                  max(args.timeout, deadline - time.monotonic()),
                                  lambda msg: msg.visible)
            if gt is None:
                print(f'no GroundTruth message with a visible target on {args.from_gt}',
                      file=sys.stderr)
                return EXIT_TIMEOUT
            request.box = gt.box
            request.stamp = gt.header.stamp
        response = cli.call(client, request, max(args.timeout, deadline - time.monotonic()))
        if response is None:
            print(f'no answer from {client.srv_name} (is the tracker node running?)',
                  file=sys.stderr)
            return EXIT_TIMEOUT
        if response.success or response.code not in retry or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if not response.success:
        print(f'refused: {response.message}', file=sys.stderr)
        return EXIT_REFUSED
    b = response.box
    print(f'target {response.target_id}: box ({b.x:.1f}, {b.y:.1f}, {b.width:.1f}, '
          f'{b.height:.1f}) on the frame at {format_stamp(response.stamp)}')
    return EXIT_OK


def _stop(cli: _Cli, args) -> int:
    from std_srvs.srv import Trigger

    client = cli.node.create_client(Trigger, _service_name(args.node, 'stop'))
    response = cli.call(client, Trigger.Request(), args.timeout)
    if response is None:
        print(f'no answer from {client.srv_name} (is the tracker node running?)',
              file=sys.stderr)
        return EXIT_TIMEOUT
    print(response.message)
    return EXIT_OK if response.success else EXIT_REFUSED


def _echo(cli: _Cli, args) -> int:
    from siam_tracker_interfaces.msg import TrackedObject

    count = 1 if args.once else args.count
    seen = [0]
    last = [time.monotonic()]

    def on_msg(msg):
        if count and seen[0] >= count:
            return
        print(format_tracked(msg), flush=True)
        seen[0] += 1
        last[0] = time.monotonic()
    topic = _service_name(args.node, 'tracked')
    sub = cli.node.create_subscription(TrackedObject, topic, on_msg, 10)
    while not count or seen[0] < count:
        got = seen[0]
        if cli.spin_until(lambda: seen[0] > got or (count and seen[0] >= count),
                          max(last[0] + args.timeout - time.monotonic(), 0.0)):
            continue
        print(_silence_message(cli, sub.topic_name, args.timeout, seen[0]), file=sys.stderr,
              flush=True)
        if count:
            return EXIT_TIMEOUT
        cli.spin_until(lambda: seen[0] > got, float('inf'))
        last[0] = time.monotonic()
    return EXIT_OK


def _silence_message(cli: _Cli, topic: str, timeout: float, seen: int) -> str:
    """Why no TrackedObject came for ``timeout`` seconds, and what to do."""
    head = (f'no TrackedObject on {topic} for {timeout:g} s'
            + (f' (after {seen} messages)' if seen else ''))
    if cli.node.count_publishers(topic) == 0:
        return (f'{head}: no node publishes it; is the tracker running, and is --node '
                'its name (with the namespace)?')
    return (f'{head}: the tracker publishes only while a target is set (it is IDLE); set one '
            'with `siam-tracker-cli set-target X Y W H`')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of siam-tracker-cli."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.utilities import remove_ros_args

    from ..ros.compat import ignore_stop_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(['siam-tracker-cli', *argv])[1:])
    rclpy.init(args=['siam-tracker-cli', *argv])
    node = rclpy.create_node('siam_tracker_cli')
    cli = _Cli(node, args.timeout)
    try:
        handler = {'set-target': _set_target, 'stop': _stop, 'echo': _echo}[args.command]
        return handler(cli, args)
    except (KeyboardInterrupt, ExternalShutdownException):
        return EXIT_OK
    finally:
        ignore_stop_signals()  # a second Ctrl-C must not break the cleanup
        cli.executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    raise SystemExit(main())
