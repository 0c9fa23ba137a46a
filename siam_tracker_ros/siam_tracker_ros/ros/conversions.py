"""
Pure conversions between ROS messages and the tracker's types (no node, no graph).

Images: ``sensor_msgs/Image`` in bgr8, rgb8, mono8, bgra8, rgba8, yuv422 (UYVY),
yuv422_yuy2 (YUYV), the Bayer 8-bit patterns and 16-bit mono (scaled to 8 bit), plus
``sensor_msgs/CompressedImage`` (jpeg/png), all to an HxWx3 BGR uint8 array, without cv_bridge.
Boxes: ``siam_tracker_interfaces/BoundingBox`` <-> ``core.types.BBox`` (same x, y, w, h
convention). TrackedObject, Detection2DArray and diagnostics are built here from a
``TrackResult`` so that the node only wires callbacks.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from builtin_interfaces.msg import Time
import cv2
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from .interfaces import BoundingBox, TrackedObject
from ..core.types import BBox, TrackResult, TrackState

NS_PER_S = 1_000_000_000

# encoding -> (channels, bytes per channel, OpenCV conversion to BGR or None for a copy)
_ENCODINGS: Dict[str, Tuple[int, int, Optional[int]]] = {
    'bgr8': (3, 1, None),
    '8UC3': (3, 1, None),
    'rgb8': (3, 1, cv2.COLOR_RGB2BGR),
    'mono8': (1, 1, cv2.COLOR_GRAY2BGR),
    '8UC1': (1, 1, cv2.COLOR_GRAY2BGR),
    'bgra8': (4, 1, cv2.COLOR_BGRA2BGR),
    '8UC4': (4, 1, cv2.COLOR_BGRA2BGR),
    'rgba8': (4, 1, cv2.COLOR_RGBA2BGR),
    # sensor_msgs image_encodings: YUV422 = 'yuv422' is UYVY, YUV422_YUY2 is YUYV.
    'yuv422': (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    'uyvy': (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    'yuv422_yuy2': (2, 1, cv2.COLOR_YUV2BGR_YUY2),
    'yuyv': (2, 1, cv2.COLOR_YUV2BGR_YUY2),
    # OpenCV names Bayer patterns by the second row's first two pixels (as cv_bridge maps them).
    'bayer_rggb8': (1, 1, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr8': (1, 1, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg8': (1, 1, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg8': (1, 1, cv2.COLOR_BayerGB2BGR),
    'mono16': (1, 2, cv2.COLOR_GRAY2BGR),
    '16UC1': (1, 2, cv2.COLOR_GRAY2BGR),
}
SUPPORTED_ENCODINGS: Tuple[str, ...] = tuple(_ENCODINGS)
MONO16_SCALINGS = ('minmax', 'shift')


class ImageConversionError(ValueError):
    """An image message cannot be turned into a BGR frame (encoding, size or data)."""


def is_supported_encoding(encoding: str) -> bool:
    """Tell whether :func:`image_to_bgr` can convert images of this encoding."""
    return encoding in _ENCODINGS


def unsupported_encoding_message(encoding: str) -> str:
    """Return the error text for an image encoding the node cannot use."""
    return (f'unsupported image encoding {encoding!r}; publish one of '
            f'{", ".join(SUPPORTED_ENCODINGS)} (or a sensor_msgs/CompressedImage with '
            'image_transport:=compressed)')


def _scale_mono16(image: np.ndarray, scaling: str) -> np.ndarray:
    if scaling == 'shift':
        return (image >> 8).astype(np.uint8)
    if scaling != 'minmax':
        raise ImageConversionError(f'mono16 scaling {scaling!r} is not one of {MONO16_SCALINGS}')
    low, high = int(image.min()), int(image.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def image_to_bgr(msg: Image, mono16_scaling: str = 'minmax') -> np.ndarray:
    """
    Convert a ``sensor_msgs/Image`` to a contiguous HxWx3 BGR uint8 array (a copy).

    16-bit mono images are scaled to 8 bit: ``minmax`` stretches each frame's range to 0..255
    (thermal cameras), ``shift`` keeps the top byte. Raises :class:`ImageConversionError` for an
    unsupported encoding or a buffer that does not match width, height and step.
    """
    encoding = msg.encoding
    if encoding not in _ENCODINGS:
        raise ImageConversionError(unsupported_encoding_message(encoding))
    channels, depth, code = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'image has no pixels ({width}x{height})')
    if step < row_bytes:
        raise ImageConversionError(
            f'{encoding} image {width}x{height} has step {step} < {row_bytes} bytes per row')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * (height - 1) + row_bytes:
        raise ImageConversionError(
            f'{encoding} image {width}x{height} (step {step}) needs '
            f'{step * (height - 1) + row_bytes} bytes, the message has {data.size}')
    if data.size < step * height:
        data = np.concatenate([data, np.zeros(step * height - data.size, np.uint8)])
    rows = data[:step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype('>u2' if msg.is_bigendian else '<u2')
        pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        pixels = pixels.astype(np.uint16)  # native byte order
        return cv2.cvtColor(_scale_mono16(pixels, mono16_scaling), code)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(
        height, width)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg, png, ...) to an HxWx3 BGR array."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageConversionError(
            f'cannot decode compressed image (format {msg.format!r}, {data.size} bytes); '
            'publish jpeg or png')
    return image


def bgr_to_image(image: np.ndarray, header: Optional[Header] = None,
                 encoding: str = 'bgr8') -> Image:
    """Wrap an HxWx3 BGR uint8 array (or HxW for mono8) in a ``sensor_msgs/Image``."""
    if image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {image.dtype}')
    if encoding == 'bgr8':
        out = image
    elif encoding == 'rgb8':
        out = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif encoding == 'mono8':
        out = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        raise ValueError(f'bgr_to_image writes bgr8, rgb8 or mono8, not {encoding!r}')
    out = np.ascontiguousarray(out)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(out.shape[0]), int(out.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(out.strides[0])
    msg.data = array.array('B', out.tobytes())
    return msg


# --- stamps -------------------------------------------------------------------------------

def stamp_to_ns(stamp: Time) -> int:
    """Return a ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Return integer nanoseconds as a ``builtin_interfaces/Time``."""
    return Time(sec=int(ns // NS_PER_S), nanosec=int(ns % NS_PER_S))


def parse_stamp(text: str) -> Time:
    """Parse 'SEC' or 'SEC.FRACTION' (up to 9 fraction digits, exact) into a Time."""
    text = text.strip()
    whole, _, frac = text.partition('.')
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 9)):
        raise ValueError(f'stamp {text!r} is not SEC or SEC.FRACTION (e.g. 1700000000.250000000)')
    return Time(sec=int(whole), nanosec=int(frac.ljust(9, '0')) if frac else 0)


def format_stamp(stamp: Time) -> str:
    """Format a Time as 'SEC.NANOSEC' with 9 digits (the inverse of :func:`parse_stamp`)."""
    return f'{int(stamp.sec)}.{int(stamp.nanosec):09d}'


# --- boxes --------------------------------------------------------------------------------

def box_msg_to_bbox(msg: BoundingBox) -> BBox:
    """Convert a ``siam_tracker_interfaces/BoundingBox`` to a BBox (same x, y, w, h)."""
    return BBox(float(msg.x), float(msg.y), float(msg.width), float(msg.height))


def bbox_to_box_msg(box: BBox) -> BoundingBox:
    """Convert a BBox to a ``siam_tracker_interfaces/BoundingBox``."""
    return BoundingBox(x=float(box.x), y=float(box.y), width=float(box.w), height=float(box.h))


def clip_box(box: BBox, width: int, height: int) -> BBox:
    """Return the part of ``box`` inside a width x height image (they must overlap)."""
    x1, y1 = max(box.x, 0.0), max(box.y, 0.0)
    x2, y2 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    return BBox(x1, y1, x2 - x1, y2 - y1)


def box_in_image(box: BBox, width: int, height: int) -> BBox:
    """
    Return ``box`` clipped to a width x height image, at least 1 px wide and high.

    Unlike :func:`clip_box` the box need not overlap the image: a box wholly outside (the
    tracker's estimate of a target leaving the view) becomes a 1-px strip at the nearest edge.
    """
    x1 = min(max(box.x, 0.0), width - 1.0)
    y1 = min(max(box.y, 0.0), height - 1.0)
    x2 = max(min(box.x + box.w, float(width)), x1 + 1.0)
    y2 = max(min(box.y + box.h, float(height)), y1 + 1.0)
    return BBox(x1, y1, x2 - x1, y2 - y1)


def normalized_center(box: BBox, width: int, height: int) -> Tuple[float, float]:
    """Box centre in [-1, 1]: -1 = left/top image edge, +1 = right/bottom edge."""
    return (2.0 * box.cx / width - 1.0, 2.0 * box.cy / height - 1.0)


def bearing(u: float, v: float, info: Optional[CameraInfo]) -> Tuple[float, float]:
    """
    Azimuth and elevation (rad) of pixel (u, v) in the camera optical frame.

    Uses the intrinsics K and the distortion D (plumb_bob, rational_polynomial or equidistant)
    of ``info``; azimuth > 0 to the right, elevation > 0 upward. Returns (nan, nan) when ``info``
    is missing or has no focal length.
    """
    if info is None:
        return (math.nan, math.nan)
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return (math.nan, math.nan)
    d = np.asarray(info.d, dtype=np.float64)
    point = np.array([[[u, v]]], dtype=np.float64)
    if d.size and np.any(d != 0):
        if info.distortion_model == 'equidistant' and d.size >= 4:
            xn, yn = cv2.fisheye.undistortPoints(point, k, d[:4]).reshape(2)
        else:
            xn, yn = cv2.undistortPoints(point, k, d).reshape(2)
    else:
        xn, yn = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    return (math.atan2(xn, 1.0), math.atan2(-yn, math.hypot(xn, 1.0)))


@dataclass(frozen=True)
class Fix:
    """Centre of the last confident fix and its stamp (for velocity)."""

    cx: float
    cy: float
    stamp_ns: int


def velocity(previous: Optional[Fix], box: BBox, stamp_ns: int) -> Tuple[float, float]:
    """Centre velocity in px/s between the previous fix and ``box`` (0, 0 when unknown)."""
    if previous is None or stamp_ns <= previous.stamp_ns:
        return (0.0, 0.0)
    dt = (stamp_ns - previous.stamp_ns) / NS_PER_S
    return ((box.cx - previous.cx) / dt, (box.cy - previous.cy) / dt)


def tracked_object(header: Header, result: TrackResult, target_id: int, width: int,
                   height: int, info: Optional[CameraInfo] = None,
                   vel: Tuple[float, float] = (0.0, 0.0),
                   frames_since_fix: int = 0) -> TrackedObject:
    """
    Build the TrackedObject of one frame from the tracker's result.

    The box is clipped to the image (:func:`box_in_image`); centre and bearing are those of
    the clipped box, so every field describes the same pixels.
    """
    box = box_in_image(result.box, width, height)
    nx, ny = normalized_center(box, width, height)
    az, el = bearing(box.cx, box.cy, info)
    return TrackedObject(
        header=header, state=int(result.state), confidence=float(result.confidence),
        score=float(result.score), target_id=int(target_id), box=bbox_to_box_msg(box),
        center_x_norm=float(nx), center_y_norm=float(ny),
        velocity_x=float(vel[0]), velocity_y=float(vel[1]), azimuth=float(az),
        elevation=float(el), frames_since_fix=int(frames_since_fix))


def idle_object(header: Header, target_id: int) -> TrackedObject:
    """Make the TrackedObject published when tracking stops (state IDLE, NaN bearing)."""
    return TrackedObject(header=header, state=TrackedObject.IDLE, target_id=int(target_id),
                         azimuth=math.nan, elevation=math.nan)


def detection_array(tracked: TrackedObject, class_id: str = 'target'):
    """
    ``vision_msgs/Detection2DArray`` equivalent of a TrackedObject (needs vision_msgs).

    Holds one detection (centre, size, ``class_id`` with the confidence as score, id = the
    target id) when the state is TRACKING, and none otherwise.
    """
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray(header=tracked.header)
    if tracked.state != TrackedObject.TRACKING:
        return out
    det = Detection2D(header=tracked.header, id=str(tracked.target_id))
    box = tracked.box
    det.bbox.center.position.x = float(box.x + box.width / 2.0)
    det.bbox.center.position.y = float(box.y + box.height / 2.0)
    det.bbox.center.theta = 0.0
    det.bbox.size_x = float(box.width)
    det.bbox.size_y = float(box.height)
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = class_id
    hyp.hypothesis.score = float(tracked.confidence)
    hyp.pose.pose.position.x = det.bbox.center.position.x
    hyp.pose.pose.position.y = det.bbox.center.position.y
    det.results.append(hyp)
    out.detections.append(det)
    return out


def state_name(state: int) -> str:
    """Return the name of a TrackState / TrackedObject.state value ('UNKNOWN(n)' otherwise)."""
    try:
        return TrackState(int(state)).name
    except ValueError:
        return f'UNKNOWN({state})'


# --- diagnostics and debug drawing --------------------------------------------------------

def diagnostic_status(name: str, hardware_id: str, level: int, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    """Make a DiagnosticStatus with ``values`` as KeyValue strings (floats with 3 decimals)."""
    def text(value: object) -> str:
        if isinstance(value, float):
            return 'nan' if math.isnan(value) else f'{value:.3f}'
        return str(value)
    level_byte = bytes([int(level)])
    return DiagnosticStatus(level=level_byte, name=name, message=message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile of ``values`` (nan when empty)."""
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else math.nan


STATE_COLORS = {0: (160, 160, 160), 1: (0, 220, 0), 2: (0, 0, 230), 3: (0, 200, 255)}


def draw_debug(image: np.ndarray, tracked: Optional[TrackedObject], rate_hz: float,
               lines: Iterable[str] = ()) -> np.ndarray:
    """Draw the box, state, confidence and processing rate on a copy of ``image``."""
    out = image.copy()
    text = [f'{rate_hz:.1f} Hz']
    if tracked is not None:
        color = STATE_COLORS.get(int(tracked.state), (255, 255, 255))
        box = tracked.box
        if tracked.state != TrackedObject.IDLE and box.width > 0 and box.height > 0:
            p1 = (int(round(box.x)), int(round(box.y)))
            p2 = (int(round(box.x + box.width)), int(round(box.y + box.height)))
            cv2.rectangle(out, p1, p2, color, 2)
        text.insert(0, f'#{tracked.target_id} {state_name(tracked.state)} '
                       f'conf {tracked.confidence:.2f}')
    else:
        color = STATE_COLORS[0]
    text.extend(lines)
    for i, line in enumerate(text):
        org = (6, 18 + 18 * i)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return out
