"""Message conversions of the ROS adapter (pure functions, no running graph)."""
import math

import cv2
import numpy as np
import pytest

from ros_helpers import PKG_SRC, require_interfaces
from siam_tracker_ros.cli.tracker_yaml import (main as tracker_yaml_main,
                                               render as render_tracker_yaml, yaml_value)

require_interfaces()

from builtin_interfaces.msg import Time  # noqa: E402, I100
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from siam_tracker_interfaces.msg import TrackedObject  # noqa: E402
from siam_tracker_interfaces.srv import SetTarget  # noqa: E402
from siam_tracker_ros.core.config import describe, TrackerConfig  # noqa: E402
from siam_tracker_ros.core.types import BBox, TrackResult, TrackState  # noqa: E402
from siam_tracker_ros.eval.synthetic import generate_frames, write_clip  # noqa: E402
from siam_tracker_ros.io.frame_source import FrameSource  # noqa: E402
from siam_tracker_ros.ros import conversions as conv  # noqa: E402
from siam_tracker_ros.ros.video_publisher import pinhole_camera_info  # noqa: E402
from std_msgs.msg import Header  # noqa: E402


def _image(rng, h=24, w=32):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _msg(array, encoding, step=None, bigendian=0):
    data = np.ascontiguousarray(array)
    height, width = data.shape[:2]
    row = data.reshape(height, -1).view(np.uint8)
    step = step or row.shape[1]
    padded = np.zeros((height, step), np.uint8)
    padded[:, :row.shape[1]] = row
    return Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                 step=step, data=padded.tobytes())


@pytest.mark.parametrize('encoding,make', [
    ('bgr8', lambda b: b),
    ('rgb8', lambda b: b[..., ::-1]),
    ('bgra8', lambda b: np.dstack([b, np.full(b.shape[:2], 255, np.uint8)])),
    ('rgba8', lambda b: np.dstack([b[..., ::-1], np.full(b.shape[:2], 7, np.uint8)])),
    ('8UC3', lambda b: b),
])
def test_color_encodings_give_the_same_bgr_pixels(encoding, make):
    bgr = _image(np.random.default_rng(1))
    out = conv.image_to_bgr(_msg(make(bgr), encoding))
    assert out.dtype == np.uint8 and out.shape == bgr.shape
    np.testing.assert_array_equal(out, bgr)


def test_mono8_becomes_three_equal_channels():
    gray = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    out = conv.image_to_bgr(_msg(gray, 'mono8'))
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_row_padding_is_skipped():
    bgr = _image(np.random.default_rng(2), 5, 7)
    out = conv.image_to_bgr(_msg(bgr, 'bgr8', step=7 * 3 + 11))
    np.testing.assert_array_equal(out, bgr)


@pytest.mark.parametrize('encoding,code', [('yuv422', cv2.COLOR_BGR2YUV_UYVY),
                                           ('uyvy', cv2.COLOR_BGR2YUV_UYVY),
                                           ('yuv422_yuy2', cv2.COLOR_BGR2YUV_YUY2),
                                           ('yuyv', cv2.COLOR_BGR2YUV_YUY2)])
def test_yuv422_variants_decode_to_the_right_colours(encoding, code):
    # Flat colour blocks survive 4:2:2 chroma subsampling; compare against the source colour.
    bgr = np.zeros((8, 16, 3), np.uint8)
    bgr[:, :8] = (200, 40, 30)    # blue
    bgr[:, 8:] = (30, 180, 60)    # green
    packed = cv2.cvtColor(bgr, code)  # (H, W, 2)
    out = conv.image_to_bgr(_msg(packed, encoding))
    assert np.abs(out.astype(int) - bgr.astype(int)).max() <= 6
    if encoding in ('yuv422', 'uyvy'):  # ROS 'yuv422' is UYVY: U Y0 V Y1
        swapped = conv.image_to_bgr(_msg(packed, 'yuv422_yuy2'))
        assert np.abs(swapped.astype(int) - bgr.astype(int)).max() > 20


@pytest.mark.parametrize('encoding,offsets', [
    ('bayer_rggb8', {'r': (0, 0), 'g1': (0, 1), 'g2': (1, 0), 'b': (1, 1)}),
    ('bayer_bggr8', {'b': (0, 0), 'g1': (0, 1), 'g2': (1, 0), 'r': (1, 1)}),
    ('bayer_gbrg8', {'g1': (0, 0), 'b': (0, 1), 'r': (1, 0), 'g2': (1, 1)}),
    ('bayer_grbg8', {'g1': (0, 0), 'r': (0, 1), 'b': (1, 0), 'g2': (1, 1)}),
])
def test_bayer_patterns_recover_a_flat_colour(encoding, offsets):
    b, g, r = 40, 120, 220
    mosaic = np.zeros((16, 16), np.uint8)
    for name, (dy, dx) in offsets.items():
        mosaic[dy::2, dx::2] = {'r': r, 'b': b, 'g1': g, 'g2': g}[name]
    out = conv.image_to_bgr(_msg(mosaic, encoding))
    centre = out[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(centre, (b, g, r), atol=3)


def test_mono16_minmax_and_shift_scaling_and_byte_order():
    values = np.array([[1000, 1500], [2000, 3000]], np.uint16)
    little = conv.image_to_bgr(_msg(values.astype('<u2'), 'mono16'))
    assert little[0, 0, 0] == 0 and little[1, 1, 0] == 255
    assert little[0, 1, 0] == round(500 / 2000 * 255)
    big = conv.image_to_bgr(_msg(values.astype('>u2'), 'mono16', bigendian=1))
    np.testing.assert_array_equal(big, little)
    shifted = conv.image_to_bgr(_msg(values.astype('<u2'), '16UC1'), mono16_scaling='shift')
    np.testing.assert_array_equal(shifted[..., 0], (values >> 8).astype(np.uint8))
    flat = conv.image_to_bgr(_msg(np.full((2, 2), 7, '<u2'), 'mono16'))
    assert not flat.any()


def test_unsupported_encoding_and_bad_buffers_raise_clear_errors():
    with pytest.raises(conv.ImageConversionError, match="'32FC1'.*bgr8"):
        conv.image_to_bgr(Image(height=2, width=2, encoding='32FC1', step=8, data=bytes(16)))
    assert not conv.is_supported_encoding('32FC1')
    assert conv.is_supported_encoding('yuv422')
    with pytest.raises(conv.ImageConversionError, match='needs'):
        conv.image_to_bgr(Image(height=4, width=4, encoding='bgr8', step=12, data=bytes(20)))
    with pytest.raises(conv.ImageConversionError, match='step'):
        conv.image_to_bgr(Image(height=4, width=4, encoding='bgr8', step=5, data=bytes(80)))
    with pytest.raises(conv.ImageConversionError, match='no pixels'):
        conv.image_to_bgr(Image(height=0, width=4, encoding='bgr8', step=12))


def test_compressed_jpeg_and_png_decode():
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[5:15, 10:20] = (10, 200, 90)
    for ext in ('.png', '.jpg'):
        ok, data = cv2.imencode(ext, bgr)
        out = conv.compressed_to_bgr(CompressedImage(format=ext[1:], data=data.tobytes()))
        assert out.shape == bgr.shape
        assert np.abs(out.astype(int) - bgr.astype(int)).mean() < 3
    with pytest.raises(conv.ImageConversionError, match='cannot decode'):
        conv.compressed_to_bgr(CompressedImage(format='jpeg', data=b'not an image'))


def test_bgr_to_image_round_trips_and_keeps_the_header():
    bgr = _image(np.random.default_rng(3))
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id='cam')
    for encoding in ('bgr8', 'rgb8'):
        msg = conv.bgr_to_image(bgr, header, encoding)
        assert msg.encoding == encoding and msg.step == 32 * 3 and msg.header.frame_id == 'cam'
        np.testing.assert_array_equal(conv.image_to_bgr(msg), bgr)
    mono = conv.bgr_to_image(bgr, header, 'mono8')
    np.testing.assert_array_equal(conv.image_to_bgr(mono)[..., 0],
                                  cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_stamps_parse_format_and_convert_exactly():
    t = conv.parse_stamp('1700000000.000000042')
    assert (t.sec, t.nanosec) == (1700000000, 42)
    assert conv.parse_stamp('17.5').nanosec == 500_000_000
    assert conv.parse_stamp('17').nanosec == 0
    assert conv.format_stamp(t) == '1700000000.000000042'
    assert conv.ns_to_stamp(conv.stamp_to_ns(t)) == t
    for bad in ('', 'abc', '1.2.3', '-5', '1.0123456789'):
        with pytest.raises(ValueError):
            conv.parse_stamp(bad)


def test_box_helpers():
    box = BBox(10.5, 20.25, 30.0, 40.0)
    assert conv.box_msg_to_bbox(conv.bbox_to_box_msg(box)) == box
    assert conv.clip_box(BBox(-10, -5, 30, 20), 100, 50) == BBox(0, 0, 20, 15)
    assert conv.clip_box(BBox(90, 40, 30, 20), 100, 50) == BBox(90, 40, 10, 10)
    assert conv.normalized_center(BBox(0, 0, 100, 50), 100, 50) == (0.0, 0.0)
    assert conv.normalized_center(BBox(-5, -5, 10, 10), 100, 50) == (-1.0, -1.0)
    assert conv.normalized_center(BBox(95, 45, 10, 10), 100, 50) == (1.0, 1.0)


def test_bearing_pinhole_and_distorted():
    info = pinhole_camera_info(641, 481, hfov_deg=90.0)
    fx = info.k[0]
    assert fx == pytest.approx(320.5)
    az, el = conv.bearing(640.0, 240.0, info)  # right edge, optical axis height
    assert az == pytest.approx(math.atan(320.0 / fx)) and el == pytest.approx(0.0)
    az, el = conv.bearing(320.0, 0.0, info)     # top edge: looking up
    assert az == pytest.approx(0.0) and el == pytest.approx(math.atan(240.0 / fx))
    assert all(math.isnan(v) for v in conv.bearing(1.0, 2.0, None))
    assert all(math.isnan(v) for v in conv.bearing(1.0, 2.0, CameraInfo()))
    # With distortion: project a known direction with OpenCV, get the same angles back.
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    d = np.array([-0.3, 0.1, 0.001, -0.002, 0.0])
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob', d=d.tolist(),
                      k=k.reshape(-1).tolist())
    az_true, el_true = 0.3, -0.2
    xn = math.tan(az_true)
    yn = -math.tan(el_true) * math.hypot(xn, 1.0)
    pix, _ = cv2.projectPoints(np.array([[xn, yn, 1.0]]), np.zeros(3), np.zeros(3), k, d)
    az, el = conv.bearing(*pix.reshape(2), info)
    assert az == pytest.approx(az_true, abs=1e-4) and el == pytest.approx(el_true, abs=1e-4)


def test_velocity_from_fixes():
    fix = conv.Fix(10.0, 20.0, 1_000_000_000)
    vx, vy = conv.velocity(fix, BBox(15, 10, 10, 20), 1_500_000_000)  # centre (20, 20)
    assert (vx, vy) == (pytest.approx(20.0), pytest.approx(0.0))
    assert conv.velocity(None, BBox(0, 0, 1, 1), 5) == (0.0, 0.0)
    assert conv.velocity(fix, BBox(0, 0, 1, 1), 1_000_000_000) == (0.0, 0.0)


def test_tracked_object_and_detection_array_agree():
    header = Header(stamp=Time(sec=3, nanosec=7), frame_id='cam')
    result = TrackResult(BBox(40, 25, 20, 10), 0.8, TrackState.TRACKING, 0.75)
    info = pinhole_camera_info(100, 60)
    msg = conv.tracked_object(header, result, 4, 100, 60, info, (1.5, -2.0), 0)
    assert msg.header == header and msg.state == TrackedObject.TRACKING == 1
    assert (msg.box.x, msg.box.y, msg.box.width, msg.box.height) == (40, 25, 20, 10)
    assert msg.center_x_norm == pytest.approx(0.0) and msg.center_y_norm == pytest.approx(0.0)
    assert msg.confidence == pytest.approx(0.75) and msg.score == pytest.approx(0.8)
    assert (msg.velocity_x, msg.velocity_y) == (1.5, -2.0) and msg.target_id == 4
    assert msg.azimuth == pytest.approx(math.atan(0.5 / info.k[0]))
    xn = yn = 0.5 / info.k[0]   # centre half a pixel right of and below the principal point
    assert msg.elevation == pytest.approx(math.atan2(-yn, math.hypot(xn, 1.0)))
    lost = conv.tracked_object(header, TrackResult(BBox(1, 1, 5, 5), 0.1, TrackState.LOST, 0.1),
                               4, 100, 60, None, (0.0, 0.0), 3)
    assert lost.state == TrackedObject.LOST and lost.frames_since_fix == 3
    assert math.isnan(lost.azimuth) and math.isnan(lost.elevation)
    idle = conv.idle_object(header, 4)
    assert idle.state == TrackedObject.IDLE and math.isnan(idle.azimuth)
    pytest.importorskip('vision_msgs.msg', reason='vision_msgs comes with ros-extra')
    det = conv.detection_array(msg, 'person')
    assert det.header == header and len(det.detections) == 1
    d = det.detections[0]
    assert d.id == '4' and d.header == header
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (50.0, 30.0)
    assert (d.bbox.size_x, d.bbox.size_y) == (20.0, 10.0)
    assert d.results[0].hypothesis.class_id == 'person'
    assert d.results[0].hypothesis.score == pytest.approx(0.75)
    assert conv.detection_array(lost).detections == []


def test_message_constants_match_the_core_state_numbers():
    for state in TrackState:
        assert getattr(TrackedObject, state.name) == int(state)
    assert conv.state_name(2) == 'LOST' and conv.state_name(9) == 'UNKNOWN(9)'
    r = SetTarget.Response
    codes = [r.ACCEPTED, r.MODEL_LOADING, r.NO_IMAGE, r.INVALID_BOX, r.STAMP_NOT_FOUND,
             r.NO_MODEL, r.IMAGE_ERROR]
    assert len(set(codes)) == len(codes)


def test_debug_drawing_marks_the_box_and_leaves_the_input_alone():
    image = np.zeros((60, 100, 3), np.uint8)
    header = Header(stamp=Time(sec=1))
    msg = conv.tracked_object(header, TrackResult(BBox(40, 30, 20, 20), 0.9,
                                                  TrackState.TRACKING, 0.9), 1, 100, 60)
    out = conv.draw_debug(image, msg, 12.5)
    assert not image.any()
    assert tuple(out[30, 50]) == (0, 220, 0)    # top edge of the box in the TRACKING colour
    assert not out[40, 50].any()                 # inside the box untouched
    assert out[5:25, 5:60].any()                 # text


def test_diagnostic_status_values_are_strings():
    status = conv.diagnostic_status('n', 'hw', 2, 'bad', {'a': 1, 'b': 0.12345,
                                                          'c': float('nan'), 'd': 'x'})
    assert status.level == b'\x02' and status.hardware_id == 'hw'
    assert [(kv.key, kv.value) for kv in status.values] == [
        ('a', '1'), ('b', '0.123'), ('c', 'nan'), ('d', 'x')]


def test_tracker_yaml_documents_every_tracker_setting():
    text = (PKG_SRC / 'config' / 'tracker.yaml').read_text()
    for name, default, *_ in describe(TrackerConfig):
        value = yaml_value(default)
        assert f'{name}: {value}\n' in text, f'config/tracker.yaml: tracker.{name} != {value}'
    # The whole block is what the generator writes (python -m siam_tracker_ros.cli.tracker_yaml).
    assert render_tracker_yaml(text) == text


def test_tracker_yaml_generator_rewrites_a_given_file_and_refuses_bad_ones(tmp_path, capsys):
    shipped = (PKG_SRC / 'config' / 'tracker.yaml').read_text()
    stale = tmp_path / 'tracker.yaml'
    stale.write_text(shipped.replace('lt_lost_frames: 3', 'lt_lost_frames: 99'))
    assert tracker_yaml_main([str(stale)]) == 0
    assert stale.read_text() == shipped
    with pytest.raises(SystemExit) as exc:
        tracker_yaml_main(['--help'])
    assert exc.value.code == 0 and 'usage:' in capsys.readouterr().out
    (tmp_path / 'other.yaml').write_text('a: 1\n')
    for path, reason in ((tmp_path / 'missing.yaml', 'cannot read'),
                         (tmp_path / 'other.yaml', "no '# tracker:' line")):
        with pytest.raises(SystemExit) as exc:
            tracker_yaml_main([str(path)])
        assert exc.value.code == 2 and reason in capsys.readouterr().err
    assert (tmp_path / 'other.yaml').read_text() == 'a: 1\n'


def test_demo_clip_ground_truth_is_exact(tmp_path):
    frames = list(generate_frames(frames=5, size=(160, 120), seed=3))
    for image, (x, y, w, h) in frames:
        # The target has a 3-pixel white border: the GT box's edges are white, outside is not.
        x0, y0, x1, y1 = (int(round(v)) for v in (x, y, x + w, y + h))
        assert image[y0 + 1, (x0 + x1) // 2].min() > 200
        assert image[y1 - 2, (x0 + x1) // 2].min() > 200
        assert image[(y0 + y1) // 2, x0 + 1].min() > 200
        assert image[(y0 + y1) // 2, x1 - 2].min() > 200
    clip, gt = write_clip(tmp_path / 'clip.avi', frames=5, size=(160, 120), seed=3)
    source = FrameSource(clip, str(gt))
    assert source.count == 5 and (source.width, source.height) == (160, 120)
    np.testing.assert_allclose(source.groundtruth, [b for _, b in frames], atol=1e-3)
    folder, gt2 = write_clip(tmp_path / 'seq', frames=5, size=(160, 120), seed=3)
    seq = FrameSource(folder)
    assert gt2 == folder / 'groundtruth.txt' and seq.groundtruth.shape == (5, 4)
    np.testing.assert_array_equal(next(seq.frames()), frames[0][0])
