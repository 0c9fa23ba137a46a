"""
The Fast DDS profile for large images (config/fastdds_large_images.xml) and its environment.

The file is checked as XML, then as Fast DDS reads it: two processes started with it exchange
a 1280x720 frame (larger than Fast DDS's built-in 512 KiB shared-memory segment) intact,
the publisher maps a shared-memory segment of the profile's size, and neither process logs an
XML parser error.
"""
import hashlib
import os
from pathlib import Path
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import cv2
import pytest

from ros_helpers import PKG_SRC, ros_env
from siam_tracker_ros.eval.synthetic import write_clip
from siam_tracker_ros.tooling import dds_profile
from siam_tracker_ros.tooling.isolation import start_process, stop_process

PROFILE = PKG_SRC / 'config' / 'fastdds_large_images.xml'
NS = {'f': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}
FRAME_1080P = 1920 * 1080 * 3


def test_profile_file_is_the_documented_fast_dds_xml():
    root = ET.parse(PROFILE).getroot()
    assert root.tag == '{%s}profiles' % NS['f']
    descriptors = {d.findtext('f:transport_id', namespaces=NS): d
                   for d in root.findall('f:transport_descriptors/f:transport_descriptor', NS)}
    kinds = {name: d.findtext('f:type', namespaces=NS) for name, d in descriptors.items()}
    assert sorted(kinds.values()) == ['SHM', 'UDPv4']
    shm = next(d for d in descriptors.values() if d.findtext('f:type', namespaces=NS) == 'SHM')
    segment = int(shm.findtext('f:segment_size', namespaces=NS))
    assert segment >= 4 * FRAME_1080P  # a few 1080p bgr8 frames in flight
    assert int(shm.findtext('f:port_queue_capacity', namespaces=NS)) >= 4 * (
        FRAME_1080P // 65500 + 1)  # one queue entry per 64 KB fragment
    participant = root.find('f:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    used = [t.text for t in participant.findall('f:rtps/f:userTransports/f:transport_id', NS)]
    assert sorted(used) == sorted(descriptors)
    assert participant.findtext('f:rtps/f:useBuiltinTransports', namespaces=NS) == 'false'


def test_profile_names_and_environment(tmp_path):
    assert dds_profile.profile_path('large_images').read_bytes() == PROFILE.read_bytes()
    assert dds_profile.profile_path('none') is None
    env = {'FASTRTPS_DEFAULT_PROFILES_FILE': '/elsewhere.xml', 'OTHER': '1'}
    dds_profile.apply_profile(env, 'large_images')
    assert env['FASTRTPS_DEFAULT_PROFILES_FILE'] == env['FASTDDS_DEFAULT_PROFILES_FILE']
    assert Path(env['FASTDDS_DEFAULT_PROFILES_FILE']).name == 'fastdds_large_images.xml'
    dds_profile.apply_profile(env, 'none')
    assert env == {'OTHER': '1'}
    own = tmp_path / 'mine.xml'
    own.write_text('<profiles/>')
    assert dds_profile.profile_path(str(own)) == own.resolve()
    with pytest.raises(dds_profile.ProfileError, match='large_images, none nor an existing'):
        dds_profile.profile_path('large-images')
    with pytest.raises(dds_profile.ProfileError, match='existing .xml'):
        dds_profile.profile_path(str(tmp_path / 'missing.xml'))


SUBSCRIBER = textwrap.dedent("""
    import hashlib, sys
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('profile_check_sub')
    got = []
    node.create_subscription(Image, '/profile_check/camera/image_raw', got.append,
                             qos_profile_sensor_data)
    while not got:
        rclpy.spin_once(node, timeout_sec=0.1)
    msg = got[0]
    print('RECEIVED', msg.width, msg.height, msg.encoding,
          hashlib.sha256(bytes(msg.data)).hexdigest(), flush=True)
""")


def _shm_segments(pid):
    """Sizes of the Fast DDS shared-memory segments that process ``pid`` has mapped."""
    sizes = {}
    for line in Path(f'/proc/{pid}/maps').read_text().splitlines():
        path = line.split()[-1]
        name = os.path.basename(path)
        if path.startswith('/dev/shm/fastrtps_') and not name.startswith('fastrtps_port') \
                and not name.endswith('_el') and os.path.exists(path):
            sizes[path] = os.stat(path).st_size
    return sizes


def test_fast_dds_accepts_the_profile_a_720p_frame_round_trip(ros_domain, tmp_path):
    pytest.importorskip('rclpy', reason='needs rclpy (ROS 2) for the round trip')
    clip, _ = write_clip(tmp_path / 'clip.avi', frames=3, size=(1280, 720))
    cap = cv2.VideoCapture(str(clip))
    ok, first = cap.read()
    cap.release()
    assert ok
    expected = hashlib.sha256(first.tobytes()).hexdigest()
    env = dds_profile.apply_profile(ros_env(ros_domain), 'large_images')
    sub_log, pub_log = tmp_path / 'sub.log', tmp_path / 'pub.log'
    sub = start_process([sys.executable, '-c', SUBSCRIBER], env, sub_log)
    pub = start_process([sys.executable, '-m', 'siam_tracker_ros.tooling.minimal_publisher',
                         '--source', str(clip), '--frames', '1', '--count', '100000',
                         '--rate', '5', '--topic', '/profile_check/camera/image_raw'],
                        env, pub_log)
    try:
        deadline = time.monotonic() + 60.0
        segments = {}
        while time.monotonic() < deadline and sub.poll() is None:
            if pub.poll() is not None:
                break
            segments = segments or _shm_segments(pub.pid)
            time.sleep(0.2)
        if not segments and pub.poll() is None:
            segments = _shm_segments(pub.pid)
        sub_code = sub.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        sub_code = None
    finally:
        stop_process(pub)
        stop_process(sub)
    sub_text, pub_text = sub_log.read_text(), pub_log.read_text()
    assert sub_code == 0, sub_text + pub_text
    received = [line.split() for line in sub_text.splitlines() if line.startswith('RECEIVED')]
    assert received == [['RECEIVED', '1280', '720', 'bgr8', expected]]
    # The profile's 32 MiB segment, not the built-in 512 KiB one.
    assert segments and max(segments.values()) >= 32 * 2 ** 20, segments
    for text in (sub_text, pub_text):
        assert 'XMLPARSER' not in text and 'Error' not in text, text
