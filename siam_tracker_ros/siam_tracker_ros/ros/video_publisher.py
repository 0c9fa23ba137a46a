"""Publish a video file or an image folder as a camera: Image + CameraInfo (+ ground truth).

Topics: ``image`` (sensor_msgs/Image), ``camera_info`` (sensor_msgs/CameraInfo, an ideal
pinhole with the horizontal field of view ``hfov_deg`` unless fx is given) and, with a
ground-truth file, ``ground_truth`` (siam_tracker_interfaces/GroundTruth, same header as the
image, published just before it). Every image is stamped with the node clock at publication.

``lockstep:=true`` waits, after each frame, for a TrackedObject with that frame's stamp on
``tracked`` (remap it to the tracker's ``~/tracked``) before the next frame, up to
``lockstep_timeout`` seconds: evaluation without dropped frames, however slow the tracker.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any, List, Optional

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from . import conversions as conv
from ..io.frame_source import FrameSource, FrameSourceError
from .interfaces import BoundingBox, GroundTruth, TrackedObject


def pinhole_camera_info(width: int, height: int, hfov_deg: float = 60.0,
                        fx: float = 0.0, header: Optional[Header] = None) -> CameraInfo:
    """Make an undistorted pinhole CameraInfo (square pixels, principal point at the centre)."""
    if fx <= 0:
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(width=int(width), height=int(height), distortion_model='plumb_bob')
    if header is not None:
        info.header = header
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class VideoPublisher(Node):
    """The video_publisher node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare the parameters and open the source (raises FrameSourceError)."""
        super().__init__('video_publisher', **kwargs)

        def declare(name, value, text):
            if isinstance(value, float):  # accept rate:=10 as well as rate:=10.0
                desc = ParameterDescriptor(description=text, read_only=True,
                                           dynamic_typing=True)
                return float(self.declare_parameter(name, value, desc).value)
            return self.declare_parameter(name, value, ParameterDescriptor(
                description=text, read_only=True)).value

        source = declare('source', '', 'video file, image folder or sequence folder (img/)')
        gt = declare('groundtruth', '', 'ground-truth file (x,y,w,h per frame); empty = none '
                     "(a sequence folder's groundtruth.txt is used by default)")
        self.rate = declare('rate', 0.0, "frames per second; 0 = the video's own rate "
                            '(30 for image folders)')
        self.loop = declare('loop', False, 'start again at the end')
        self.frame_id = declare('frame_id', 'camera', 'header.frame_id of the images')
        self.encoding = declare('encoding', 'bgr8', 'published encoding: bgr8, rgb8 or mono8')
        self.hfov_deg = declare('hfov_deg', 60.0, 'horizontal field of view for CameraInfo')
        self.fx = declare('fx', 0.0, 'focal length in pixels for CameraInfo (0 = from hfov)')
        self.lockstep = declare('lockstep', False, 'wait for the tracker after each frame')
        self.lockstep_timeout = declare('lockstep_timeout', 5.0,
                                        'seconds to wait for the tracker in lockstep mode')
        self.wait_subscribers = declare('wait_for_subscribers', 0,
                                        'before the first frame, wait until the image topic '
                                        'has this many subscribers')
        self.settle_time = declare('settle_time', 1.0, 'seconds to wait after the subscribers '
                                   'appeared (wait_for_subscribers > 0): the subscriber side '
                                   'of DDS discovery may lag the publisher side')
        self.max_frames = declare('max_frames', 0, 'stop after this many frames (0 = all)')
        self.linger = declare('linger', 1.0, 'seconds to keep running after the last frame '
                              'before exiting (when not looping)')
        reliable = declare('qos_reliability', 'reliable', 'best_effort or reliable')
        if not source:
            raise FrameSourceError('no source: set the source parameter to a video file or an '
                                   'image folder')
        self.source = FrameSource(source, gt or None)
        if self.rate <= 0:
            self.rate = self.source.fps if self.source.fps > 0 else 30.0
        if self.encoding not in ('bgr8', 'rgb8', 'mono8'):
            raise FrameSourceError(f'encoding {self.encoding!r} is not bgr8, rgb8 or mono8')
        # Depth 5: a reliable reader that is a little late still gets every frame.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.RELIABLE if reliable == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.create_publisher(Image, 'image', qos)
        self.info_pub = self.create_publisher(CameraInfo, 'camera_info', qos)
        self.gt_pub = (self.create_publisher(GroundTruth, 'ground_truth', 10)
                       if self.source.groundtruth is not None else None)
        self._ack = threading.Condition()
        self._acked_ns = -1
        if self.lockstep:
            self.create_subscription(TrackedObject, 'tracked', self._on_tracked, 10)
        self.published = 0
        self.lockstep_timeouts = 0
        self.get_logger().info(
            f'publishing {self.source.path} ({self.source.width}x{self.source.height}, '
            f'{self.source.count} frames) at {self.rate:.1f} Hz on {self.image_pub.topic_name}'
            + (' in lockstep' if self.lockstep else ''))

    def _on_tracked(self, msg: TrackedObject) -> None:
        with self._ack:
            self._acked_ns = max(self._acked_ns, conv.stamp_to_ns(msg.header.stamp))
            self._ack.notify_all()

    def _wait_ack(self, stamp_ns: int, resend) -> bool:
        """Wait for the TrackedObject of ``stamp_ns``; publish the frame again every second.

        A lost image (best-effort subscription) would otherwise stall lockstep until the
        timeout; the tracker ignores a copy of a frame it has already tracked.
        """
        deadline = time.monotonic() + self.lockstep_timeout
        next_resend = time.monotonic() + 1.0
        with self._ack:
            while self._acked_ns < stamp_ns and rclpy.ok():
                now = time.monotonic()
                if now >= deadline:
                    return False
                if now >= next_resend:
                    resend()
                    next_resend = now + 1.0
                self._ack.wait(min(deadline, next_resend) - now)
        return True

    def run(self) -> None:
        """Publish the frames (blocking; run beside a spinning executor)."""
        if self.wait_subscribers > 0:
            while (self.image_pub.get_subscription_count() < self.wait_subscribers
                   and rclpy.ok()):
                time.sleep(0.05)
            time.sleep(max(self.settle_time, 0.0))
        period = 1.0 / self.rate
        next_time = time.monotonic()
        while rclpy.ok():
            for index, image in enumerate(self.source.frames()):
                if not rclpy.ok() or (self.max_frames and self.published >= self.max_frames):
                    return
                if not self.lockstep:
                    delay = next_time - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    next_time = max(next_time + period, time.monotonic() - period)
                stamp_ns = self.publish_frame(index, image)
                if self.lockstep and not self._wait_ack(stamp_ns, self._resend):
                    self.lockstep_timeouts += 1
                    self.get_logger().warning(
                        f'lockstep: no TrackedObject for frame {index} within '
                        f'{self.lockstep_timeout:.1f} s; going on')
            if not self.loop:
                return

    def publish_frame(self, index: int, image) -> int:
        """Publish frame ``index`` (ground truth, camera info, image); return its stamp."""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        row = self.source.gt_box(index)
        gt = None
        if self.gt_pub is not None and row is not None:
            visible = not any(math.isnan(v) for v in row)
            box = BoundingBox(x=float(row[0]), y=float(row[1]), width=float(row[2]),
                              height=float(row[3])) if visible else BoundingBox()
            gt = GroundTruth(header=header, frame_index=index, visible=visible, box=box)
        height, width = image.shape[:2]
        info = pinhole_camera_info(width, height, self.hfov_deg, self.fx, header)
        msg = conv.bgr_to_image(image, header, self.encoding)
        self._last = (gt, info, msg)
        self._resend()
        self.published += 1
        return conv.stamp_to_ns(header.stamp)

    def _resend(self) -> None:
        gt, info, msg = self._last
        if gt is not None:
            self.gt_pub.publish(gt)
        self.info_pub.publish(info)
        self.image_pub.publish(msg)


def _spin(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def main(args: Optional[List[str]] = None) -> int:
    """Run the video publisher (console script ``video_publisher``)."""
    rclpy.init(args=args)
    node = None
    executor = SingleThreadedExecutor()
    spinner = threading.Thread(target=_spin, args=(executor,), daemon=True)
    code = 0
    try:
        node = VideoPublisher()
        executor.add_node(node)
        spinner.start()
        node.run()
        node.get_logger().info(f'published {node.published} frames'
                               + (f', {node.lockstep_timeouts} lockstep timeouts'
                                  if node.lockstep else ''))
        if rclpy.ok():
            time.sleep(max(node.linger, 0.0))
    except FrameSourceError as exc:
        print(f'video_publisher: {exc}', flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break cleanup
        executor.shutdown(timeout_sec=2.0)
        if spinner.is_alive():
            spinner.join(timeout=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    raise SystemExit(main())
