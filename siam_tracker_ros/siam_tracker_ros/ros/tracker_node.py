"""
ROS 2 tracker node: a thin adapter around ``factory.load_tracker``.

Subscribes ``image`` (sensor_msgs/Image, or CompressedImage with ``image_transport:=compressed``)
and ``camera_info``; serves ``~/set_target`` (siam_tracker_interfaces/SetTarget) and ``~/stop``
(std_srvs/Trigger); publishes ``~/tracked`` (TrackedObject), ``~/detections``
(vision_msgs/Detection2DArray, when vision_msgs is importable), ``~/debug_image`` (only while
subscribed) and ``/diagnostics``.

Threads: the executor runs callbacks (image callbacks only store the message, so services
answer at once); one worker thread tracks the frame ``core.frame_scheduler.FrameScheduler``
hands it (the newest, never a queue of stale ones, after a catch-up over the frames that
followed a SetTarget frame); the model loads in a background thread.

Runs on Humble, Iron, Jazzy and Kilted: where rclpy passes MessageInfo (Iron and later), frames
lost before the node are counted from gaps in the publisher's sequence numbers; on Humble that
count is reported as unknown.
"""
from __future__ import annotations

import collections
import dataclasses
import re
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy import exceptions as rclpy_exceptions
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from . import compat
from . import conversions as conv
from .interfaces import SetTarget, TrackedObject
from ..core.config import describe, from_mapping, TrackerConfig
from ..core.frame_scheduler import BufferedFrame, FrameScheduler, StampMonitor
from ..core.image_velocity import ImageVelocity
from ..core.types import TrackResult, TrackState

try:  # vision_msgs is optional (ros-<distro>-vision-msgs; not on PyPI)
    from vision_msgs.msg import Detection2DArray
except ImportError:  # pragma: no cover - depends on the install
    Detection2DArray = None

NODE_NAME = 'siam_tracker'
TRACKER_PREFIX = 'tracker.'
BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'torch')
TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable')
PRECISIONS = ('fp32', 'fp16', 'int8')
STAGES = ('receive', 'wait', 'convert', 'crop', 'network', 'policies', 'publish')
CAMERA_INFO_WARN_AFTER = 30   # images without any CameraInfo before the one warning
DEVICE_PATTERN = re.compile(r'^(cpu|cuda(:\d+)?)$')
# rclpy's errors for a parameter value that breaks its descriptor (range, type) at start.
_PARAMETER_ERRORS = tuple(getattr(rclpy_exceptions, name) for name in (
    'InvalidParameterValueException', 'InvalidParameterTypeException') if hasattr(
        rclpy_exceptions, name))


class ParameterChoiceError(ValueError):
    """A start-up parameter has a value outside its documented choices."""


def check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> str:
    """Return ``value`` when it is one of ``choices``, else raise ParameterChoiceError."""
    if value not in choices:
        raise ParameterChoiceError(f'parameter {name}: {value!r} is not one of '
                                   f'{", ".join(choices)}')
    return value


def check_device(value: str) -> str:
    """Return ``value`` when it names a device (cpu, cuda, cuda:N), else raise."""
    if not DEVICE_PATTERN.match(value):
        raise ParameterChoiceError(f'parameter device: {value!r} is not cpu, cuda or cuda:N '
                                   '(N = the GPU index)')
    return value


@dataclasses.dataclass
class _Stats:
    """Counters and recent timings reported in /diagnostics."""

    received: int = 0
    processed: int = 0
    missed: int = 0    # never reached the node (publisher sequence-number gaps)
    rejected: int = 0
    errors_in_window: int = 0
    last_error: str = ''
    latency_ms: Deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=200))
    step_ms: Deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=200))
    # Latency budget per stage (ms): receive = image stamp -> callback, wait = callback ->
    # worker, convert = image decode, crop / network / policies (decode + long-term
    # policies) = the tracker's own timers, publish = building and sending the messages.
    stage_ms: Dict[str, Deque[float]] = dataclasses.field(
        default_factory=lambda: {name: collections.deque(maxlen=200) for name in STAGES})
    processed_at: Deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=400))

    def rate(self, now: float, window: float = 2.0) -> float:
        """Return the processed frames per second over the last ``window`` seconds."""
        recent = [t for t in self.processed_at if now - t <= window]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return (len(recent) - 1) / span if span > 0 else 0.0


def _descriptor(description: str, low=None, high=None, integer=False, read_only=False,
                choices: Tuple[str, ...] = ()) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        desc.additional_constraints = 'one of: ' + ', '.join(choices)
    if low is not None and high is not None:
        if integer:
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return desc


_PARAM_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER,
                float: Parameter.Type.DOUBLE, str: Parameter.Type.STRING,
                tuple: Parameter.Type.DOUBLE_ARRAY}


def _param_value(value: Any) -> Any:
    """Return a TrackerConfig value as a ROS parameter value (tuples as lists of floats)."""
    return [float(v) for v in value] if isinstance(value, tuple) else value


class TrackerNode(Node):
    """The tracker node (see the module docstring for its interface)."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare parameters, create the ROS interfaces and start loading the model."""
        super().__init__(NODE_NAME, **kwargs)
        self._declare_node_parameters()
        self._tracker_fields = self._declare_tracker_parameters()

        p = self._param
        self._model_path: str = p('model_path')
        self._backend_name: str = p('backend')
        if ':' not in self._backend_name:   # package.module:factory = a plugin backend
            check_choice('backend', self._backend_name, BACKENDS)
        self._precision: str = check_choice('precision', p('precision'), PRECISIONS)
        self._device: str = check_device(p('device'))
        self._transport: str = check_choice('image_transport', p('image_transport'),
                                            TRANSPORTS)
        check_choice('qos_reliability', p('qos_reliability'), RELIABILITIES)
        check_choice('mono16_scaling', p('mono16_scaling'), conv.MONO16_SCALINGS)
        self._class_id: str = p('class_id')

        self._lock = threading.Lock()        # frame scheduler, counters
        self._wake = threading.Condition(self._lock)
        self._track_lock = threading.Lock()  # the tracker and the target
        self._running = True
        self._frames = FrameScheduler(int(p('frame_buffer_size')),
                                      int(p('frame_buffer_mb')) * 1024 * 1024)
        self._latest_received: float = 0.0
        self._stamps = StampMonitor()
        self._stamp_warnings_seen = 0
        self._camera_info: Optional[CameraInfo] = None
        self._last_header: Optional[Header] = None
        self._stats = _Stats()
        self._bad_encodings: Dict[Tuple[str, str], int] = {}   # (key, reason) -> count
        self._last_seq: Optional[int] = None

        self._tracker = None
        self._model_state = 'loading'
        self._model_error = ''
        self._model_name = ''
        self._backend_used = ''
        self._target_id = 0
        self._motion = ImageVelocity(float(p('velocity_smoothing')))
        self._last_tracked: Optional[TrackedObject] = None

        reliability = (ReliabilityPolicy.RELIABLE if p('qos_reliability') == 'reliable'
                       else ReliabilityPolicy.BEST_EFFORT)
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=reliability)
        image_type = CompressedImage if self._transport == 'compressed' else Image
        # Humble calls subscription callbacks with the message only; later releases pass
        # MessageInfo to a two-argument callback.
        self._has_message_info = compat.subscription_passes_message_info()
        on_image = self._on_image_with_info if self._has_message_info else self._on_image
        self._image_sub = self.create_subscription(image_type, 'image', on_image, sensor_qos)
        self._info_sub = self.create_subscription(CameraInfo, 'camera_info', self._on_info,
                                                  sensor_qos)
        self._tracked_pub = self.create_publisher(TrackedObject, '~/tracked', 10)
        self._det_pub = (self.create_publisher(Detection2DArray, '~/detections', 10)
                         if Detection2DArray is not None else None)
        self._debug_pub = self.create_publisher(
            Image, '~/debug_image', QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                               reliability=ReliabilityPolicy.RELIABLE))
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(SetTarget, '~/set_target', self._on_set_target)
        self.create_service(Trigger, '~/stop', self._on_stop)
        self._diag_timer = self.create_timer(float(p('diagnostics_period')),
                                             self._publish_diagnostics)
        self._outage_timer = self.create_timer(1.0 / float(p('no_image_rate')),
                                               self._check_image_outage)
        self._camera_info_warned = False
        if Detection2DArray is None:
            self.get_logger().warning('vision_msgs is not importable: ~/detections is off '
                                      '(install ros-<distro>-vision-msgs)')

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name='tracker-worker', daemon=True)
        self._worker.start()
        self._loader = threading.Thread(target=self._load_model, name='model-loader',
                                        daemon=True)
        if self._model_path:
            self._loader.start()
        else:   # nothing to load: say so at once (no SetTarget can see 'loading')
            self._load_model()

    # --- parameters -------------------------------------------------------------------

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _declare_node_parameters(self) -> None:
        ro = {'read_only': True}
        self.declare_parameter('model_path', '', _descriptor(
            'model directory (with manifest.json) or an upstream NanoTrack folder; fetch one '
            'with `siam-model fetch nanotrack-v3`', **ro))
        self.declare_parameter('backend', 'auto', _descriptor(
            'inference backend (or a plugin, package.module:factory)', choices=BACKENDS, **ro))
        self.declare_parameter('precision', 'fp16', _descriptor(
            'TensorRT engine precision (fp32, fp16, int8; int8 engines come from '
            '`siam-model build-engine --int8`); onnxruntime on a GPU: fp16 enables the '
            'TensorRT execution provider in fp16', choices=PRECISIONS, **ro))
        self.declare_parameter('engine_cache', '', _descriptor(
            "TensorRT engine cache folder ('' = $SIAM_ENGINE_CACHE or "
            '~/.cache/siam_tracker_ros/engines), the one `siam-model build-engine --cache` '
            'wrote', **ro))
        self.declare_parameter('device', 'cpu', _descriptor(
            'device: cpu, cuda or cuda:N', **ro))
        self.declare_parameter('image_transport', 'raw', _descriptor(
            'type of the image topic: raw = sensor_msgs/Image, compressed = '
            'sensor_msgs/CompressedImage', choices=TRANSPORTS, **ro))
        self.declare_parameter('qos_reliability', 'best_effort', _descriptor(
            'reliability of the image and camera_info subscriptions (depth 1)',
            choices=RELIABILITIES, **ro))
        self.declare_parameter('frame_buffer_size', 60, _descriptor(
            'recent frames kept for SetTarget requests with a stamp', 1, 600, integer=True,
            **ro))
        self.declare_parameter('frame_buffer_mb', 256, _descriptor(
            'memory budget of those frames in MiB (the newest frame is always kept)', 1,
            65536, integer=True, **ro))
        self.declare_parameter('diagnostics_period', 1.0, _descriptor(
            '/diagnostics publication period in seconds', 0.1, 60.0, **ro))
        self.declare_parameter('class_id', 'target', _descriptor(
            'class_id of the hypothesis in ~/detections', **ro))
        self.declare_parameter('stamp_tolerance', 0.001, _descriptor(
            'largest difference in seconds between a SetTarget stamp and a buffered frame',
            0.0, 10.0))
        self.declare_parameter('mono16_scaling', 'minmax', _descriptor(
            '16-bit mono to 8 bit: minmax = stretch each frame, shift = keep the top byte',
            choices=conv.MONO16_SCALINGS))
        self.declare_parameter('velocity_smoothing', 0.5, _descriptor(
            'weight of the newest measurement in the velocity average (1 = no smoothing)',
            0.0, 1.0))
        self.declare_parameter('publish_detections', True, _descriptor(
            'publish vision_msgs/Detection2DArray on ~/detections'))
        self.declare_parameter('min_target_size', 4.0, _descriptor(
            'smallest box side in pixels that SetTarget accepts', 1.0, 1000.0))
        self.declare_parameter('image_timeout', 1.0, _descriptor(
            'seconds without an image, while a target is set, before the node reports the '
            'camera gone (diagnostics WARN and LOST messages on ~/tracked)', 0.1, 60.0))
        self.declare_parameter('no_image_rate', 2.0, _descriptor(
            'rate in Hz of the LOST messages on ~/tracked while images are missing', 0.1, 30.0,
            read_only=True))

    def _declare_tracker_parameters(self) -> Dict[str, str]:
        """Declare tracker.* from TrackerConfig; unset ones take the model's tuned value."""
        fields = {}
        for name, default, description, low, high, runtime in describe(TrackerConfig):
            ptype = _PARAM_TYPES.get(type(default))
            if ptype is None:
                continue
            note = '' if runtime else ' (crop geometry: may be refused while tracking)'
            desc = _descriptor(f"{description}{note}; unset = the model's tuned value "
                               f'(default {default})', low, high,
                               integer=ptype == Parameter.Type.INTEGER)
            self.declare_parameter(TRACKER_PREFIX + name, ptype, desc)
            fields[TRACKER_PREFIX + name] = name
        return fields

    def _tracker_overrides(self) -> Dict[str, Any]:
        """tracker.* values that were set (from the params file, the command line or later)."""
        out = {}
        for pname, field in self._tracker_fields.items():
            value = self.get_parameter_or(pname).value
            if value is not None:
                out[field] = value
        return out

    def _on_set_parameters(self, params: List[Parameter]) -> SetParametersResult:
        changes = {self._tracker_fields[p.name]: p.value for p in params
                   if p.name in self._tracker_fields and p.value is not None}
        for p in params:
            if p.name == 'mono16_scaling' and p.value not in conv.MONO16_SCALINGS:
                return SetParametersResult(successful=False, reason=(
                    f'mono16_scaling must be one of {", ".join(conv.MONO16_SCALINGS)}'))
            if p.name == 'velocity_smoothing':
                with self._track_lock:
                    self._motion.smoothing = p.value
        if not changes:
            return SetParametersResult(successful=True)
        with self._track_lock:
            tracker = self._tracker
            try:
                base = tracker.config if tracker is not None else TrackerConfig()
                config = from_mapping(TrackerConfig, changes, base=base)
                if tracker is not None:
                    tracker.set_config(config)
            except (ValueError, TypeError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # --- model loading ----------------------------------------------------------------

    def _load_model(self) -> None:
        from ..backends.registry import choose_backend
        from ..factory import load_tracker

        if not self._model_path:
            self._fail_load('model_path is empty: set it to a model directory '
                            '(fetch one with `siam-model fetch nanotrack-v3`)')
            return
        self.get_logger().info(f'loading model {self._model_path} '
                               f'(backend {self._backend_name}, device {self._device})')
        t0 = time.monotonic()
        try:
            if ':' not in self._backend_name:
                self.get_logger().info(choose_backend(self._backend_name, self._device).reason)
            options = {'precision': self._precision,
                       'cache_dir': self._param('engine_cache') or None}
            tracker = load_tracker(self._model_path, backend=self._backend_name,
                                   device=self._device, backend_options=options)
        except Exception as exc:  # noqa: BLE001 - reported, node keeps running
            self._fail_load(f'model {self._model_path!r} failed to load: {exc}')
            return
        with self._track_lock:
            # tracker.* values given at start or set while loading, one by one: a value the
            # model cannot run (crop sizes its graphs refuse) keeps the model's value.
            for field, value in self._tracker_overrides().items():
                try:
                    tracker.set_config(from_mapping(type(tracker.config), {field: value},
                                                    base=tracker.config))
                except ValueError as exc:
                    self.get_logger().error(f'parameter {TRACKER_PREFIX}{field}={value!r} '
                                            f'refused, the model keeps '
                                            f'{tracker.config.flat()[field]!r}: {exc}')
            self._tracker = tracker
            self._model_name = getattr(tracker.spec, 'name', str(self._model_path))
            self._backend_used = getattr(tracker.backend, 'name', self._backend_name)
            self._device = getattr(tracker.backend, 'device', self._device)
            self._model_state = 'ready'
        # Show the values in force (ros2 param get); setting them is a no-op for the tracker.
        values = tracker.config.flat()
        self.set_parameters([Parameter(p, value=_param_value(values[f]))
                             for p, f in self._tracker_fields.items()])
        self.get_logger().info(f'model {self._model_name} ready on {self._backend_used} '
                               f'in {time.monotonic() - t0:.2f} s')
        self._publish_diagnostics()

    def _fail_load(self, message: str) -> None:
        self._model_state = 'failed'
        self._model_error = message
        self.get_logger().error(message)
        self._publish_diagnostics()

    # --- subscriptions ----------------------------------------------------------------

    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image_with_info(self, msg: Any, info: Any) -> None:
        """Image callback where rclpy passes MessageInfo (Iron and later)."""
        self._receive(msg, compat.publication_sequence_number(info))

    def _on_image(self, msg: Any) -> None:
        """Image callback with the message only (Humble's dispatch)."""
        self._receive(msg, None)

    def _receive(self, msg: Any, seq: Optional[int]) -> None:
        # Frames that never reached this callback (replaced in the depth-1 queue, lost on the
        # way) show as gaps in the publisher's sequence numbers, where the middleware has them.
        missed = 0
        if seq is not None:
            if self._last_seq is not None and self._last_seq < seq <= self._last_seq + 10000:
                missed = seq - self._last_seq - 1
            self._last_seq = seq
        encoding = getattr(msg, 'encoding', None)
        if encoding is not None and not conv.is_supported_encoding(encoding):
            self._reject(encoding, conv.unsupported_encoding_message(encoding))
            return
        now = time.monotonic()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        clock_ns = self.get_clock().now().nanoseconds
        with self._lock:
            self._stats.received += 1
            if self._frames.tracking:
                self._stats.missed += missed
            if not self._stamps.check(stamp_ns, clock_ns):
                self._stats.stage_ms['receive'].append((clock_ns - stamp_ns) / 1e6)
            self._frames.push(msg, stamp_ns, len(msg.data), now)
            self._latest_received = now
            self._wake.notify()
            warn_info = (self._camera_info is None and not self._camera_info_warned
                         and self._stats.received >= CAMERA_INFO_WARN_AFTER)
            self._camera_info_warned |= warn_info
        if warn_info:
            self.get_logger().warning(
                f'no CameraInfo on {self._info_sub.topic_name} after '
                f'{CAMERA_INFO_WARN_AFTER} images on {self._image_sub.topic_name}: azimuth and '
                'elevation stay NaN; remap camera_info to the topic of the camera')

    def _reject(self, key: str, message: str) -> None:
        with self._lock:
            self._stats.rejected += 1
            self._stats.errors_in_window += 1
            self._stats.last_error = message
            first = (key, message) not in self._bad_encodings
            self._bad_encodings[(key, message)] = self._bad_encodings.get((key, message), 0) + 1
        if first:
            self.get_logger().error(message)
            self._publish_diagnostics()

    def _decode(self, msg: Any):
        if isinstance(msg, CompressedImage):
            return conv.compressed_to_bgr(msg)
        return conv.image_to_bgr(msg, self._param('mono16_scaling'))

    # --- services ---------------------------------------------------------------------

    def _on_set_target(self, request: SetTarget.Request,
                       response: SetTarget.Response) -> SetTarget.Response:
        response.success = False
        response.target_id = 0
        refusal = self._set_target(request, response)
        if refusal is not None:
            response.code, response.message = refusal
            self.get_logger().warning(f'set_target refused: {response.message}')
        else:
            self.get_logger().info(response.message)
        return response

    def _set_target(self, request: SetTarget.Request, response: SetTarget.Response
                    ) -> Optional[Tuple[int, str]]:
        """Do the work of SetTarget; return (code, reason) of a refusal, None on success."""
        codes = SetTarget.Response
        if self._model_state == 'failed':
            return codes.NO_MODEL, f'the tracker has no model: {self._model_error}'
        if self._tracker is None:
            return codes.MODEL_LOADING, (f'the model is still loading ({self._model_path}, '
                                         f'backend {self._backend_name}); call again soon')
        want = conv.stamp_to_ns(request.stamp)
        with self._lock:
            frames = self._frames.frames
            buffered = self._frames.newest() if want == 0 else self._frames.nearest(want)
        if buffered is None:
            return codes.NO_IMAGE, (f'no image received yet on {self._image_sub.topic_name}; '
                                    'the box must be drawn on an image the tracker has seen')
        tol = int(self._param('stamp_tolerance') * conv.NS_PER_S)
        if want != 0 and abs(buffered.stamp_ns - want) > tol:
            return codes.STAMP_NOT_FOUND, self._stamp_not_found(request.stamp, want, frames,
                                                                buffered)
        frame = buffered.payload
        try:
            image = self._decode(frame)
        except conv.ImageConversionError as exc:
            return codes.IMAGE_ERROR, str(exc)
        height, width = image.shape[:2]
        box = conv.box_msg_to_bbox(request.box)
        problem = box.validation_error(width, height)
        if problem:
            return codes.INVALID_BOX, problem
        used = conv.clip_box(box, width, height)
        problem = used.validation_error(width, height)
        if problem:
            return codes.INVALID_BOX, problem
        smallest = float(self._param('min_target_size'))
        if min(used.w, used.h) < smallest:
            return codes.INVALID_BOX, (
                f'box {used.w:.1f}x{used.h:.1f} px (inside the image) is smaller than '
                f'min_target_size {smallest:g} px; draw a larger box or lower the parameter')
        with self._track_lock:
            try:
                result = self._tracker.init(image, used)
            except ValueError as exc:
                return codes.INVALID_BOX, str(exc)
            self._target_id += 1
            self._motion.reset()
            with self._lock:
                self._frames.start(buffered)
            tracked = self._make_tracked(frame.header, result, width, height)
            self._publish(tracked, image)
            target_id = self._target_id
            with self._lock:
                self._wake.notify()
        response.success = True
        response.code = codes.ACCEPTED
        response.box = conv.bbox_to_box_msg(used)
        response.stamp = frame.header.stamp
        response.target_id = target_id
        response.message = (f'tracking target {target_id} from the frame at '
                            f'{conv.format_stamp(frame.header.stamp)}')
        return None

    def _stamp_not_found(self, stamp, want: int, frames, nearest) -> str:
        asked = conv.format_stamp(stamp)
        first, last = frames[0].payload.header.stamp, frames[-1].payload.header.stamp
        offset_ms = (nearest.stamp_ns - want) / 1e6
        near = (f'the nearest buffered frame is {conv.format_stamp(nearest.payload.header.stamp)}'
                f' ({offset_ms:+.1f} ms; raise stamp_tolerance to accept it)')
        with self._lock:
            odd = self._stamps.summary()
        if odd:
            near += (f'; this stream has stamps that do not increase ({odd}): give a zero '
                     'stamp to use the newest frame')
        if frames[0].stamp_ns < want < frames[-1].stamp_ns:
            return (f'the image stamped {asked} never reached the node (dropped in transport '
                    f'or replaced in the subscription queue before it was taken); {near}')
        return (f'no recent image has stamp {asked}; the buffer holds {len(frames)} frames from '
                f'{conv.format_stamp(first)} to {conv.format_stamp(last)}; {near} (give a '
                'zero stamp for the newest)')

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        with self._track_lock:
            was = self._frames.tracking
            if self._tracker is not None:
                self._tracker.stop()
            with self._lock:
                self._frames.stop()
            header = self._last_header if self._last_header is not None else Header(
                stamp=self.get_clock().now().to_msg())
            idle = conv.idle_object(header, self._target_id)
            self._last_tracked = idle
            self._tracked_pub.publish(idle)
            if self._det_pub is not None and self._param('publish_detections'):
                self._det_pub.publish(conv.detection_array(idle, self._class_id))
        response.success = True
        response.message = (f'stopped tracking target {self._target_id}' if was
                            else 'no target was set; state is IDLE')
        self.get_logger().info(response.message)
        return response

    # --- tracking ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                frame = self._frames.next_frame()
                while frame is None and self._running:
                    self._wake.wait(0.5)
                    frame = self._frames.next_frame()
                if not self._running:
                    return
                target_id = self._target_id
            self._track(frame, target_id)

    def _track(self, frame: BufferedFrame, target_id: int) -> None:
        msg = frame.payload
        t_start = time.monotonic()
        try:
            image = self._decode(msg)
        except conv.ImageConversionError as exc:
            self._reject(getattr(msg, 'encoding', 'compressed'), str(exc))
            return
        t_decoded = time.monotonic()
        height, width = image.shape[:2]
        with self._track_lock:
            if target_id != self._target_id or not self._frames.tracking:
                return  # the target changed or stopped while decoding
            try:
                result = self._tracker.update(image)
            except Exception as exc:  # noqa: BLE001 - reported, node keeps running
                self._reject('update', f'tracker update failed: {exc}')
                return
            t_tracked = time.monotonic()
            stages = dict(self._tracker.last_stage_ms)
            tracked = self._make_tracked(msg.header, result, width, height)
            self._publish(tracked, image)
        now = time.monotonic()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        crop, network = stages.get('crop', 0.0), stages.get('network', 0.0)
        with self._lock:
            stats = self._stats
            stats.processed += 0 if frame.repeat else 1
            stats.processed_at.append(now)
            stats.step_ms.append((now - t_start) * 1e3)
            if stamp_ns > 0:
                stats.latency_ms.append(age_ms)
            for name, value in (('wait', (t_start - frame.received) * 1e3),
                                ('convert', (t_decoded - t_start) * 1e3),
                                ('crop', crop), ('network', network),
                                ('policies', max((t_tracked - t_decoded) * 1e3 - crop - network,
                                                 0.0)),
                                ('publish', (now - t_tracked) * 1e3)):
                stats.stage_ms[name].append(value)

    def _make_tracked(self, header: Header, result: TrackResult, width: int,
                      height: int) -> TrackedObject:
        """Under self._track_lock: the TrackedObject of one frame (updates motion state)."""
        vel = self._motion.update(result.box if result.state == TrackState.TRACKING else None,
                                  conv.stamp_to_ns(header.stamp))
        self._last_header = header
        return conv.tracked_object(header, result, self._target_id, width, height,
                                   self._camera_info, vel, self._motion.frames_since_fix)

    def _publish(self, tracked: TrackedObject, image) -> None:
        self._last_tracked = tracked
        self._tracked_pub.publish(tracked)
        if self._det_pub is not None and self._param('publish_detections'):
            self._det_pub.publish(conv.detection_array(tracked, self._class_id))
        if self._debug_pub.get_subscription_count() > 0:
            rate = self._stats.rate(time.monotonic())
            self._debug_pub.publish(conv.bgr_to_image(
                conv.draw_debug(image, tracked, rate), tracked.header))

    def _seconds_without_image(self) -> Optional[float]:
        """
        Seconds without a new image to track while a target is set, None otherwise.

        Counted from the later of the last image received and the last frame tracked, and None
        while buffered frames are still caught up: a target set on an older frame, or a slow
        tracker, leaves the camera's frames waiting, which is no outage.
        """
        with self._lock:
            if (not self._frames.tracking or not self._latest_received
                    or self._frames.catching_up):
                return None
            last = self._latest_received
            if self._stats.processed_at:
                last = max(last, self._stats.processed_at[-1])
            return time.monotonic() - last

    def _check_image_outage(self) -> None:
        """While a target is set and images stop, say so on ~/tracked (LOST, held box)."""
        gap = self._seconds_without_image()
        if gap is None or gap < float(self._param('image_timeout')):
            return
        with self._track_lock:
            last = self._last_tracked
            if last is None or not self._frames.tracking:
                return
            self._motion.update(None, 0)
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=last.header.frame_id)
            lost = TrackedObject(
                header=header, state=TrackedObject.LOST, confidence=0.0, score=0.0,
                target_id=last.target_id, box=last.box, center_x_norm=last.center_x_norm,
                center_y_norm=last.center_y_norm, azimuth=last.azimuth,
                elevation=last.elevation, frames_since_fix=self._motion.frames_since_fix)
            self._tracked_pub.publish(lost)
            if self._det_pub is not None and self._param('publish_detections'):
                self._det_pub.publish(conv.detection_array(lost, self._class_id))

    # --- diagnostics ------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            errors = stats.errors_in_window
            stats.errors_in_window = 0
            latency = list(stats.latency_ms)
            steps = list(stats.step_ms)
            tracking = self._frames.tracking
            skipped = self._frames.skipped
            missed = stats.missed if self._has_message_info else None
            values = {
                'state': conv.state_name(self._last_tracked.state)
                if self._last_tracked is not None and tracking else 'IDLE',
                'target_id': self._target_id,
                'model': self._model_name or self._model_path,
                'model_state': self._model_state,
                'backend': self._backend_used or self._backend_name,
                'device': self._device,
                'rate_hz': stats.rate(now),
                'latency_ms_p50': conv.percentile(latency, 50),
                'latency_ms_p99': conv.percentile(latency, 99),
                **{f'latency_{name}_ms_p{q}': conv.percentile(list(stats.stage_ms[name]), q)
                   for name in STAGES for q in (50, 99)},
                'processing_ms_p50': conv.percentile(steps, 50),
                'frames_received': stats.received,
                'frames_processed': stats.processed,
                'frames_dropped': skipped + (missed or 0),
                'frames_skipped': skipped,
                'frames_reprocessed': self._frames.reprocessed,
                'frames_missed': missed if missed is not None else (
                    'unknown: this rclpy passes no MessageInfo (Humble)'),
                'frames_buffered': len(self._frames.frames),
                'stamps_zero': self._stamps.zero,
                'stamps_backwards': self._stamps.backwards,
                'stamps_future': self._stamps.future,
                'buffer_mb': round(self._frames.buffered_bytes / 2 ** 20, 1),
                'frames_rejected': stats.rejected,
                'last_error': stats.last_error,
            }
            seconds_since_image = now - self._latest_received if self._latest_received else None
            new_bad_stamps = self._stamps.total - self._stamp_warnings_seen
            self._stamp_warnings_seen = self._stamps.total
            stamp_summary = self._stamps.summary()
        if self._model_state == 'failed':
            level, message = DiagnosticStatus.ERROR, self._model_error
        elif errors:
            level, message = DiagnosticStatus.ERROR, values['last_error']
        elif self._model_state == 'loading':
            level, message = DiagnosticStatus.WARN, 'loading the model'
        elif seconds_since_image is None:
            level, message = DiagnosticStatus.WARN, 'no image received yet'
        elif tracking and seconds_since_image > float(self._param('image_timeout')):
            level, message = DiagnosticStatus.WARN, (
                f'no image for {seconds_since_image:.1f} s while a target is set')
        elif new_bad_stamps:
            level, message = DiagnosticStatus.WARN, (
                f'{new_bad_stamps} frames since the last report had stamps that cannot order '
                f'them (so far: {stamp_summary}); tracked in arrival order')
        else:
            level, message = DiagnosticStatus.OK, f'{values["state"].lower()}'
        status = conv.diagnostic_status(f'{self.get_fully_qualified_name()}: tracker',
                                        str(values['model']), level[0], message, values)
        array = DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                status=[status])
        self._diag_pub.publish(array)

    # --- shutdown ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the worker thread and release the backend (call before destroy_node)."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        self._worker.join(timeout=5.0)
        with self._track_lock:
            tracker, self._tracker = self._tracker, None
        close = getattr(getattr(tracker, 'backend', None), 'close', None)
        if callable(close):
            close()


def main(args: Optional[List[str]] = None) -> int:
    """
    Run the tracker node until SIGINT / SIGTERM (console script ``tracker_node``).

    Exits 0 on a signal, after the worker has stopped and the node is destroyed; exits 2 with
    one line naming the parameter when a start-up parameter is refused.
    """
    stop = compat.init_stopping_on_signals(args)
    node = None
    code = 0
    try:
        node = TrackerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (ParameterChoiceError, *_PARAMETER_ERRORS) as exc:
        print(f'{NODE_NAME}: {exc}', file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        compat.ignore_stop_signals()
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    raise SystemExit(main())
