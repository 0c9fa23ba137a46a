"""
video_publisher's prepared frames: decoded once, identical to OpenCV's decode, in order.

FrameMessages holds a whole short video in memory (preload) or decodes it in a thread a few
frames ahead (a video over the memory cap); both give every frame's Image data equal to
cv2.VideoCapture's frames, in order, looping. The node itself chooses between the two from
preload_mb and builds JPEG CompressedImages with image_transport:=compressed.
"""
import time

import cv2
import numpy as np
import pytest

from ros_helpers import require_interfaces

require_interfaces()

import rclpy  # noqa: E402, I100
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from siam_tracker_ros.eval.synthetic import write_clip  # noqa: E402
from siam_tracker_ros.io.frame_source import FrameSource  # noqa: E402
from siam_tracker_ros.ros import conversions as conv  # noqa: E402
from siam_tracker_ros.ros.video_publisher import (  # noqa: E402
    compressed_message, FrameMessages, PreparedFrame, VideoPublisher)

FRAMES = 12


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    path, gt = write_clip(tmp_path_factory.mktemp('clip') / 'clip.avi', frames=FRAMES,
                          size=(320, 240))
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == FRAMES
    return path, gt, decoded


def _build(index, image):
    return PreparedFrame(index, conv.bgr_to_image(image), CameraInfo(), None)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize('preload', (True, False))
def test_frames_equal_opencv_decode_in_order_and_loop(clip, preload):
    path, _, decoded = clip
    source = FrameSource(path)
    one = 320 * 240 * 3
    messages = FrameMessages(source, _build, preload_bytes=FRAMES * one if preload else one,
                             frame_bytes=one)
    assert (messages.preloaded is not None) == preload
    if preload:
        assert messages.preloaded_bytes == FRAMES * one
    frames = messages.frames(loop=True)
    got = _take(frames, 2 * FRAMES + 3)   # twice through, then into the third pass
    messages.close()
    assert [f.index for f in got] == list(range(FRAMES)) * 2 + [0, 1, 2]
    for frame in got:
        msg = frame.image
        assert (msg.width, msg.height, msg.encoding, msg.step) == (320, 240, 'bgr8', 960)
        assert bytes(msg.data) == decoded[frame.index].tobytes(), frame.index
    if preload:  # replayed from memory: the very same message objects, built once
        assert got[0].image is got[FRAMES].image
    else:
        assert got[0].image is not got[FRAMES].image


def test_streaming_without_loop_ends_and_close_stops_the_thread(clip):
    path, _, decoded = clip
    messages = FrameMessages(FrameSource(path), _build, preload_bytes=0)
    assert messages.preloaded is None
    got = list(messages.frames(loop=False))
    assert [f.index for f in got] == list(range(FRAMES))
    looping = FrameMessages(FrameSource(path), _build, preload_bytes=0, ahead=2)
    it = looping.frames(loop=True)
    next(it)
    looping.close()
    assert not looping._thread.is_alive()
    assert list(it) == []


def test_a_count_over_the_cap_is_not_preloaded(clip):
    path, _, _ = clip
    calls = []

    def build(index, image):
        calls.append(index)
        return _build(index, image)
    messages = FrameMessages(FrameSource(path), build, preload_bytes=10 * 320 * 240 * 3,
                             frame_bytes=320 * 240 * 3)
    assert messages.preloaded is None and calls == []  # nothing decoded in vain


def test_compressed_message_is_a_jpeg_of_the_frame(clip):
    _, _, decoded = clip
    msg = compressed_message(decoded[3], 'bgr8', 95)
    assert msg.format == 'bgr8; jpeg compressed bgr8'
    back = conv.compressed_to_bgr(msg)
    assert back.shape == decoded[3].shape
    assert np.abs(back.astype(int) - decoded[3].astype(int)).mean() < 4.0
    mono = compressed_message(decoded[3], 'mono8')
    assert mono.format == 'mono8; jpeg compressed mono8'


@pytest.mark.parametrize('preload_mb, transport', ((64.0, 'raw'), (0.0, 'compressed')))
def test_node_prepares_its_frames_once(ros_domain, clip, preload_mb, transport):
    path, gt, decoded = clip
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = VideoPublisher(context=context, parameter_overrides=[
            Parameter('source', value=str(path)), Parameter('groundtruth', value=str(gt)),
            Parameter('preload_mb', value=preload_mb),
            Parameter('image_transport', value=transport)])
        assert (node.messages.preloaded is not None) == (preload_mb > 0)
        assert node.image_pub.topic_name == ('/camera/image_raw' if transport == 'raw'
                                             else '/camera/image_raw/compressed')
        frames = node.messages.frames(loop=False)
        first = next(frames)
        assert first.gt.frame_index == 0 and first.gt.visible
        assert (first.info.width, first.info.height) == (320, 240)
        if transport == 'raw':
            assert bytes(first.image.data) == decoded[0].tobytes()
        else:
            assert np.abs(conv.compressed_to_bgr(first.image).astype(int)
                          - decoded[0].astype(int)).mean() < 4.0
        stamp = node.publish_frame(first)   # headers set at publication, all alike
        assert first.image.header.stamp == first.info.header.stamp == first.gt.header.stamp
        assert conv.stamp_to_ns(first.image.header.stamp) == stamp
        assert abs(stamp - time.time_ns()) < 10 ** 9  # the node clock (system time)
        assert node.published == 1
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown(context=context)
