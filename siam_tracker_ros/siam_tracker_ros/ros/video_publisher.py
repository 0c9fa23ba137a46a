"""
Publish a video file or an image folder as a camera: Image + CameraInfo (+ ground truth).

Topics, named as a camera driver's (relative, so a namespace applies):
``camera/image_raw`` (sensor_msgs/Image), ``camera/camera_info`` (sensor_msgs/CameraInfo, an
ideal pinhole with the horizontal field of view ``hfov_deg`` unless fx is given) and, with a
ground-truth file, ``camera/ground_truth`` (siam_tracker_interfaces/GroundTruth, same header as
the image, published just before it). These are the topics tracker.launch.py listens on by
default. Every image is stamped with the node clock at publication.

``lockstep:=true`` waits, after each frame, for a TrackedObject with that frame's stamp on
``siam_tracker/tracked`` (the tracker node's ``~/tracked``) before the next frame, up to
``lockstep_timeout`` seconds: evaluation without dropped frames, however slow the tracker.

Frames are decoded once: the whole video goes into memory as ready-to-publish messages when
it fits in ``preload_mb``, else a thread decodes a few frames ahead of the publishing loop.
Each message is built once from the decoded frame; publishing a frame only sets its header,
on a monotonic schedule (``rate``). ``image_transport:=compressed`` publishes JPEG
``sensor_msgs/CompressedImage`` on ``camera/image_raw/compressed`` instead of the raw images.

SIGINT and SIGTERM stop the publishing thread before the ROS context goes away: exit 0, no
traceback.
"""
from __future__ import annotations

import array
import math
import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from . import compat
from . import conversions as conv
from .interfaces import BoundingBox, GroundTruth, TrackedObject
from ..io.frame_source import FrameSource, FrameSourceError

IMAGE_TOPIC = 'camera/image_raw'
COMPRESSED_TOPIC = 'camera/image_raw/compressed'
CAMERA_INFO_TOPIC = 'camera/camera_info'
GROUND_TRUTH_TOPIC = 'camera/ground_truth'
TRACKED_TOPIC = 'siam_tracker/tracked'
ENCODINGS = ('bgr8', 'rgb8', 'mono8')
TRANSPORTS = ('raw', 'compressed')
DECODE_AHEAD = 8  # frames the decoding thread keeps ready when the video is not preloaded


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


def compressed_message(image: np.ndarray, encoding: str = 'bgr8',
                       quality: int = 90) -> CompressedImage:
    """JPEG-encode a BGR frame into a CompressedImage (format as compressed_image_transport's)."""
    if encoding == 'mono8':
        ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                                [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        fmt = 'mono8; jpeg compressed mono8'
    else:
        ok, jpeg = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        fmt = f'{encoding}; jpeg compressed bgr8'
    if not ok:
        raise FrameSourceError('OpenCV cannot JPEG-encode the frame')
    data = array.array('B')
    data.frombytes(jpeg)
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


class PreparedFrame(NamedTuple):
    """One frame as ready-to-publish messages; publishing only sets their headers."""

    index: int
    image: Any                      # sensor_msgs Image or CompressedImage
    info: CameraInfo
    gt: Optional[GroundTruth]


class FrameMessages:
    """
    The frames of a FrameSource as PreparedFrames, each built once from its decoded frame.

    When the messages of the whole video fit in ``preload_bytes`` they are built up front and
    replayed from memory (a loop costs no decoding); otherwise a thread decodes and builds up
    to ``ahead`` frames ahead of the consumer. :meth:`frames` yields them in order.
    """

    def __init__(self, source: FrameSource, build: Callable[[int, np.ndarray], PreparedFrame],
                 preload_bytes: int, frame_bytes: int = 0, ahead: int = DECODE_AHEAD) -> None:
        """
        Preload ``source`` through ``build`` when its messages fit in ``preload_bytes``.

        ``frame_bytes`` (an estimate of one message's size) skips a preload that the source's
        frame count already shows is too large.
        """
        self.source = source
        self._build = build
        self._ahead = max(1, int(ahead))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.preloaded: Optional[List[PreparedFrame]] = None
        self.preloaded_bytes = 0
        if preload_bytes > 0 and source.count * frame_bytes <= preload_bytes:
            self.preloaded = self._preload(preload_bytes)

    def _preload(self, limit: int) -> Optional[List[PreparedFrame]]:
        frames: List[PreparedFrame] = []
        total = 0
        for index, image in enumerate(self.source.frames()):
            frame = self._build(index, image)
            total += len(frame.image.data)
            if total > limit:
                return None
            frames.append(frame)
        self.preloaded_bytes = total
        return frames

    def frames(self, loop: bool = False) -> Iterator[PreparedFrame]:
        """Yield the frames in order (over and over with ``loop``) until :meth:`close`."""
        if self.preloaded is not None:
            while self.preloaded and not self._stop.is_set():
                yield from self.preloaded
                if not loop:
                    return
            return
        ready: queue.Queue = queue.Queue(maxsize=self._ahead)
        self._thread = threading.Thread(target=self._decode, args=(ready, loop), daemon=True)
        self._thread.start()
        while not self._stop.is_set():
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _decode(self, ready: queue.Queue, loop: bool) -> None:
        def put(item) -> bool:
            while not self._stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        try:
            while not self._stop.is_set():
                count = 0
                for index, image in enumerate(self.source.frames()):
                    if not put(self._build(index, image)):
                        return
                    count += 1
                if not loop or count == 0:
                    break
        except Exception as exc:  # noqa: BLE001 - raised again in the consumer
            put(exc)
            return
        put(None)

    def close(self) -> None:
        """Stop :meth:`frames` and the decoding thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class VideoPublisher(Node):
    """The video_publisher node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare the parameters, open the source and prepare its frames (FrameSourceError)."""
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
        self.transport = declare('image_transport', 'raw', 'raw (sensor_msgs/Image on '
                                 f'{IMAGE_TOPIC}) or compressed (JPEG CompressedImage on '
                                 f'{COMPRESSED_TOPIC})')
        self.jpeg_quality = declare('jpeg_quality', 90, 'JPEG quality with '
                                    'image_transport:=compressed, 1..100')
        self.preload_mb = declare('preload_mb', 1024.0, 'MiB of memory for the pre-decoded '
                                  'video; a longer one is decoded by a thread a few frames '
                                  'ahead (0: always)')
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
        if self.encoding not in ENCODINGS:
            raise FrameSourceError(f'encoding {self.encoding!r} is not one of '
                                   f'{", ".join(ENCODINGS)}')
        if self.transport not in TRANSPORTS:
            raise FrameSourceError(f'image_transport {self.transport!r} is not one of '
                                   f'{", ".join(TRANSPORTS)}')
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise FrameSourceError(f'jpeg_quality {self.jpeg_quality} is not in 1..100')
        self.source = FrameSource(source, gt or None)
        if self.rate <= 0:
            self.rate = self.source.fps if self.source.fps > 0 else 30.0
        # Depth 5: a reliable reader that is a little late still gets every frame.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.RELIABLE if reliable == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT)
        if self.transport == 'compressed':
            self.image_pub = self.create_publisher(CompressedImage, COMPRESSED_TOPIC, qos)
        else:
            self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos)
        self.info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, qos)
        self.gt_pub = (self.create_publisher(GroundTruth, GROUND_TRUTH_TOPIC, 10)
                       if self.source.groundtruth is not None else None)
        self._ack = threading.Condition()
        self._acked_ns = -1
        self._stopping = threading.Event()
        self._infos: Dict[Tuple[int, int], CameraInfo] = {}
        self._last: Optional[PreparedFrame] = None
        if self.lockstep:
            self.create_subscription(TrackedObject, TRACKED_TOPIC, self._on_tracked, 10)
        self.published = 0
        self.publish_seconds = 0.0  # first frame to last
        self.lockstep_timeouts = 0
        pixels = self.source.width * self.source.height
        estimate = pixels * (1 if self.encoding == 'mono8' else 3)
        if self.transport == 'compressed':
            estimate //= 10  # JPEG at quality 90 of camera-like frames: a tenth or less
        self.messages = FrameMessages(self.source, self.prepare,
                                      int(self.preload_mb * 2 ** 20), estimate)
        if self.messages.preloaded is not None:
            held = (f'pre-decoded: {len(self.messages.preloaded)} frames, '
                    f'{self.messages.preloaded_bytes / 2 ** 20:.0f} MiB')
        else:
            held = (f'decoded {DECODE_AHEAD} frames ahead: the video exceeds preload_mb '
                    f'{self.preload_mb:.0f}')
        self.get_logger().info(
            f'publishing {self.source.path} ({self.source.width}x{self.source.height}, '
            f'{self.source.count} frames, {held}) at {self.rate:.1f} Hz on '
            f'{self.image_pub.topic_name}' + (' in lockstep' if self.lockstep else ''))

    def prepare(self, index: int, image: np.ndarray) -> PreparedFrame:
        """Build the messages of frame ``index`` once (their headers are set when published)."""
        if self.transport == 'compressed':
            msg = compressed_message(image, self.encoding, int(self.jpeg_quality))
        else:
            msg = conv.bgr_to_image(image, None, self.encoding)
        height, width = image.shape[:2]
        info = self._infos.get((width, height))
        if info is None:
            info = pinhole_camera_info(width, height, self.hfov_deg, self.fx)
            self._infos[(width, height)] = info
        gt = None
        row = self.source.gt_box(index)
        if self.gt_pub is not None and row is not None:
            visible = not any(math.isnan(v) for v in row)
            box = BoundingBox(x=float(row[0]), y=float(row[1]), width=float(row[2]),
                              height=float(row[3])) if visible else BoundingBox()
            gt = GroundTruth(frame_index=index, visible=visible, box=box)
        return PreparedFrame(index, msg, info, gt)

    def stop(self) -> None:
        """Make :meth:`run` return soon (call from any thread but a signal handler)."""
        self._stopping.set()
        self.messages.close()
        with self._ack:
            self._ack.notify_all()

    def _running(self) -> bool:
        return not self._stopping.is_set() and rclpy.ok(context=self.context)

    def _on_tracked(self, msg: TrackedObject) -> None:
        with self._ack:
            self._acked_ns = max(self._acked_ns, conv.stamp_to_ns(msg.header.stamp))
            self._ack.notify_all()

    def _wait_ack(self, stamp_ns: int, resend) -> bool:
        """
        Wait for the TrackedObject of ``stamp_ns``; publish the frame again every second.

        A lost image (best-effort subscription) would otherwise stall lockstep until the
        timeout; the tracker ignores a copy of a frame it has already tracked.
        """
        deadline = time.monotonic() + self.lockstep_timeout
        next_resend = time.monotonic() + 1.0
        with self._ack:
            while self._acked_ns < stamp_ns and self._running():
                now = time.monotonic()
                if now >= deadline:
                    return False
                if now >= next_resend:
                    resend()
                    next_resend = now + 1.0
                self._ack.wait(min(deadline, next_resend) - now)
        return True

    def run(self) -> None:
        """Publish the frames (blocking; run beside a spinning executor until :meth:`stop`)."""
        if self.wait_subscribers > 0:
            while (self.image_pub.get_subscription_count() < self.wait_subscribers
                   and self._running()):
                self._stopping.wait(0.05)
            self._stopping.wait(max(self.settle_time, 0.0))
        period = 1.0 / self.rate
        next_time = time.monotonic()
        first = None
        for frame in self.messages.frames(loop=self.loop):
            if not self._running() or (self.max_frames and self.published >= self.max_frames):
                return
            if not self.lockstep:
                delay = next_time - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    return
                # More than a period late (a busy machine): the schedule starts afresh.
                next_time = max(next_time + period, time.monotonic() - period)
            stamp_ns = self.publish_frame(frame)
            first = time.monotonic() if first is None else first
            self.publish_seconds = time.monotonic() - first
            if self.lockstep and not self._wait_ack(stamp_ns, self._resend):
                self.lockstep_timeouts += 1
                self.get_logger().warning(
                    f'lockstep: no TrackedObject for frame {frame.index} within '
                    f'{self.lockstep_timeout:.1f} s; going on')

    def linger_after_run(self) -> None:
        """Wait ``linger`` seconds (or until :meth:`stop`), so late readers get the last frame."""
        self._stopping.wait(max(self.linger, 0.0))

    def publish_frame(self, frame: PreparedFrame) -> int:
        """Publish one prepared frame (ground truth, camera info, image) now; return its stamp."""
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        frame.image.header = header
        frame.info.header = header
        if frame.gt is not None:
            frame.gt.header = header
        self._last = frame
        self._resend()
        self.published += 1
        return conv.stamp_to_ns(header.stamp)

    def _resend(self) -> None:
        frame = self._last
        if frame.gt is not None:
            self.gt_pub.publish(frame.gt)
        self.info_pub.publish(frame.info)
        self.image_pub.publish(frame.image)


def _publish_all(node: VideoPublisher, errors: list) -> None:
    """Publish every frame, log a summary line, then linger (the publishing thread)."""
    try:
        node.run()
        seconds = node.publish_seconds
        rate = (node.published - 1) / seconds if seconds > 0 else 0.0
        node.get_logger().info(f'published {node.published} frames in '
                               f'{node.publish_seconds:.1f} s ({rate:.1f} Hz)'
                               + (f', {node.lockstep_timeouts} lockstep timeouts'
                                  if node.lockstep else ''))
        node.linger_after_run()
    except Exception as exc:  # noqa: BLE001 - handed to main, which reports it
        errors.append(exc)


def main(args: Optional[List[str]] = None) -> int:
    """
    Run the video publisher (console script ``video_publisher``).

    Exits 0 at the end of the video or on SIGINT / SIGTERM (after the publishing thread has
    stopped), 2 with one line when the source cannot be read.
    """
    requested = compat.init_stopping_on_signals(args)
    node = None
    worker = None
    errors: list = []
    code = 0
    executor = SingleThreadedExecutor()
    try:
        node = VideoPublisher()
        executor.add_node(node)
        worker = threading.Thread(target=_publish_all, args=(node, errors), daemon=True)
        worker.start()
        while not requested.is_set() and worker.is_alive() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except FrameSourceError as exc:
        errors.append(exc)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        compat.ignore_stop_signals()
        if node is not None:
            node.stop()
        if worker is not None:
            worker.join(timeout=5.0)
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    for exc in errors:
        if not isinstance(exc, FrameSourceError):
            raise exc
        print(f'video_publisher: {exc}', file=sys.stderr, flush=True)
        code = 2
    return code


if __name__ == '__main__':
    raise SystemExit(main())
