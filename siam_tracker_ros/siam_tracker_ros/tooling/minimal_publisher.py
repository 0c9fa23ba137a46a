"""
Minimal image publisher for benchmarks: pre-built messages, one topic, one thread.

    python -m siam_tracker_ros.tooling.minimal_publisher --source CLIP --count N --rate HZ
        [--transport raw|compressed] [--topic camera/image_raw] [--frames K]

Builds the Image (or JPEG CompressedImage) messages of the first K frames of CLIP once, then
publishes N of them in a loop on a monotonic schedule, changing nothing but the header stamp:
no CameraInfo, no ground truth, no parameters, no executor. It is the floor that
``video_publisher`` is measured against (``siam-bench --node --publisher minimal``). Prints
``published N frames in T s (R Hz)`` at the end; SIGINT / SIGTERM stop it (exit 0).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import List, Optional

QOS_DEPTH = 5  # as video_publisher: KEEP_LAST 5, reliable (a best-effort reader gets best effort)


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of the minimal publisher."""
    p = argparse.ArgumentParser(prog='minimal_publisher', description=__doc__.strip()
                                .split('\n')[0])
    p.add_argument('--source', required=True, help='video file or image folder')
    p.add_argument('--count', type=int, required=True, help='frames to publish')
    p.add_argument('--rate', type=float, default=30.0, help='frames per second')
    p.add_argument('--transport', choices=('raw', 'compressed'), default='raw')
    p.add_argument('--topic', default=None, help='default camera/image_raw, or '
                   'camera/image_raw/compressed with --transport compressed')
    p.add_argument('--frames', type=int, default=0,
                   help='frames of the source to pre-build (0 = all)')
    p.add_argument('--wait-subscribers', type=int, default=1,
                   help='wait for this many subscribers before the first frame')
    p.add_argument('--settle', type=float, default=1.0,
                   help='seconds to wait after the subscribers appeared')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point (``python -m siam_tracker_ros.tooling.minimal_publisher``)."""
    args = build_parser().parse_args(argv)
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from ..io.frame_source import FrameSource, FrameSourceError
    from ..ros import compat
    from ..ros import conversions as conv
    from ..ros.video_publisher import COMPRESSED_TOPIC, compressed_message, IMAGE_TOPIC

    try:
        source = FrameSource(args.source)
    except FrameSourceError as exc:
        print(f'minimal_publisher: {exc}', file=sys.stderr)
        return 2
    messages = []
    for index, image in enumerate(source.frames()):
        if args.frames and index >= args.frames:
            break
        messages.append(compressed_message(image) if args.transport == 'compressed'
                        else conv.bgr_to_image(image))
    if not messages:
        print(f'minimal_publisher: {args.source} has no frame', file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    compat.init_without_signal_handlers()
    import rclpy
    node = rclpy.create_node('minimal_publisher')
    msg_type = CompressedImage if args.transport == 'compressed' else Image
    topic = args.topic or (COMPRESSED_TOPIC if args.transport == 'compressed' else IMAGE_TOPIC)
    pub = node.create_publisher(msg_type, topic, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=QOS_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE))
    published = 0
    first = last = 0.0
    try:
        while pub.get_subscription_count() < args.wait_subscribers and not stop.is_set():
            stop.wait(0.05)
        stop.wait(max(args.settle, 0.0))
        period = 1.0 / args.rate
        next_time = time.monotonic()
        while published < args.count and not stop.is_set():
            delay = next_time - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            next_time = max(next_time + period, time.monotonic() - period)
            msg = messages[published % len(messages)]
            msg.header = Header(stamp=node.get_clock().now().to_msg(), frame_id='camera')
            pub.publish(msg)
            last = time.monotonic()
            first = first or last
            published += 1
    finally:
        seconds = last - first
        rate = (published - 1) / seconds if seconds > 0 else 0.0
        print(f'published {published} frames in {seconds:.1f} s ({rate:.1f} Hz)', flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
