"""
Clean shutdown, the README's camera topics, and siam-tracker-cli echo, as real processes.

- video_publisher under `ros2 run` + SIGINT (Ctrl-C: the whole group), and SIGTERM: exit 0, no
  traceback, having published on /camera/image_raw + /camera/camera_info.
- `ros2 launch siam_tracker_ros demo.launch.py` on bag.avi at 100 Hz, tracking, SIGINT, three
  runs in a row: exit 0, no traceback, no process left in the group.
- The README's pair `ros2 launch ... tracker.launch.py image:=/camera/image_raw
  camera_info:=/camera/camera_info model:=...` + `ros2 run siam_tracker_ros video_publisher
  --ros-args -p source:=... -p rate:=30.0 -p loop:=true`, typed as written: finite bearings.
- `siam-tracker-cli echo` on that graph: a silence says why and exits 3; --timeout is the
  longest silence, not the whole run.

Every graph runs on the session's private ROS_DOMAIN_ID with localhost discovery.
"""
import math
import os
import re
import signal
import subprocess
import time

import pytest

from ros_helpers import (BAG, BAG_GT, diag_values, find_status, INSTALL, MODEL_V3,
                         require_interfaces, require_ros2_cli, ros_env, RosClient, run,
                         stop_ros2_daemon, wait_for_text)

require_ros2_cli()
require_interfaces()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402, I100
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from siam_tracker_interfaces.msg import TrackedObject  # noqa: E402
from siam_tracker_ros.eval.synthetic import write_clip  # noqa: E402
from siam_tracker_ros.tooling.isolation import start_process, stop_process  # noqa: E402

MODEL = MODEL_V3
VIDEO_PUBLISHER_EXE = INSTALL / 'siam_tracker_ros' / 'lib' / 'siam_tracker_ros' / 'video_publisher'


def need_model():
    if not (MODEL / 'nanotrack_backbone.onnx').is_file():
        pytest.skip(f'{MODEL} is absent (reference models in ../shared; set SIAM_SHARED)')
    return MODEL


def need_bag():
    if not BAG.is_file() or not BAG_GT.is_file():
        pytest.skip(f'{BAG} is absent (videos in ../shared; set SIAM_SHARED)')
    return BAG, BAG_GT


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def interrupt(proc: subprocess.Popen, sig: int, wait: float = 30.0):
    """
    Send ``sig`` to the group of ``proc``, as Ctrl-C in a terminal does.

    Return (exit code, whether the group emptied within ``wait`` s).
    """
    os.killpg(proc.pid, sig)
    try:
        code = proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        code = None
    deadline = time.monotonic() + wait
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return code, not group_alive(proc.pid)


@pytest.fixture(scope='module')
def env(ros_domain, model_cache):
    env = ros_env(ros_domain, model_cache)
    yield env
    stop_ros2_daemon(env)


@pytest.fixture(scope='module')
def client(ros_domain):
    client = RosClient('shutdown_test_client')
    yield client
    client.close()


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp('clip') / 'clip.avi', frames=60)[0]


@pytest.mark.parametrize('how', ('ros2 run, SIGINT', 'executable, SIGTERM'))
def test_video_publisher_exits_0_on_sigint_and_sigterm(how, env, client, clip, tmp_path):
    args = ['--ros-args', '-p', f'source:={clip}', '-p', 'rate:=100.0', '-p', 'loop:=true']
    if how.startswith('ros2 run'):
        cmd, sig = ['ros2', 'run', 'siam_tracker_ros', 'video_publisher', *args], signal.SIGINT
    else:
        cmd, sig = [str(VIDEO_PUBLISHER_EXE), *args], signal.SIGTERM
    images = client.collect(Image, '/camera/image_raw')
    infos = client.collect(CameraInfo, '/camera/camera_info')
    log = tmp_path / 'publisher.log'
    proc = start_process(cmd, env, log)
    try:
        # Interrupted while publishing at 100 Hz (where the old node always failed).
        assert images.wait_for(start=19, timeout=60.0) is not None, log.read_text()
        assert infos.wait_for(timeout=10.0) is not None
        code, emptied = interrupt(proc, sig)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert emptied
    assert 'Traceback' not in text and 'Failed to publish' not in text, text[-3000:]
    assert re.search(r'published \d+ frames', text), text[-3000:]
    image, info = images.messages[0], infos.messages[0]
    assert (image.width, image.height, image.encoding) == (480, 320, 'bgr8')
    assert (info.width, info.height) == (480, 320) and info.k[0] > 0


def test_demo_launch_at_100hz_sigint_three_runs(env, client, tmp_path):
    model = need_model()
    video, gt = need_bag()
    tracked = client.collect(TrackedObject, '/siam_tracker/tracked', 100)
    for attempt in range(3):
        log = tmp_path / f'launch{attempt}.log'
        start = len(tracked)
        proc = start_process(['ros2', 'launch', 'siam_tracker_ros', 'demo.launch.py',
                              f'video:={video}', f'groundtruth:={gt}', f'model:={model}',
                              'rate:=100', 'loop:=true', 'autostart:=true'], env, log)
        try:
            # Tracking, the tracker publishing at up to 100 Hz, when the SIGINT comes.
            first = tracked.wait_for(lambda m: m.state == TrackedObject.TRACKING, start=start,
                                     timeout=120.0)
            assert first is not None, log.read_text()[-3000:]
            # The one-shot set-target client gone first: a SIGINT that lands while launch cleans
            # up an exiting process kills that cleanup task (launch lets KeyboardInterrupt
            # through) and launch then waits for the process forever. That race is launch's,
            # and the client exits ~0.2 s after tracking starts, where this SIGINT would land.
            assert wait_for_text(log, r'siam-tracker-cli-\d+\]: process has finished cleanly',
                                 timeout=30.0), log.read_text()[-3000:]
            assert tracked.wait_for(start=len(tracked) + 20, timeout=30.0) is not None
            code, emptied = interrupt(proc, signal.SIGINT)
        finally:
            stop_process(proc)
        text = log.read_text()
        assert code == 0, f'run {attempt}: {text[-3000:]}'
        assert emptied, f'run {attempt}: a process of the launch outlived it'
        for bad in ('Traceback', 'Failed to publish', 'has died', 'context is invalid'):
            assert bad not in text, f'run {attempt}: {bad!r} in {text[-3000:]}'
        # Publisher, tracker and the autostart set-target client.
        assert text.count('process has finished cleanly') >= 3, text[-3000:]


# --- the README's pair of commands -------------------------------------------------------------

def model_ready(array) -> bool:
    status = find_status(array, '/siam_tracker')
    return status is not None and diag_values(status).get('model_state') == 'ready'


@pytest.fixture(scope='module')
def readme_pair(env, client, tmp_path_factory):
    """tracker.launch.py and video_publisher, started as the README types them."""
    model = need_model()
    video, _ = need_bag()
    work = tmp_path_factory.mktemp('readme_pair')
    diagnostics = client.collect(DiagnosticArray, '/diagnostics')
    tracker = start_process(['ros2', 'launch', 'siam_tracker_ros', 'tracker.launch.py',
                             'image:=/camera/image_raw', 'camera_info:=/camera/camera_info',
                             f'model:={model}'], env, work / 'tracker.log')
    publisher = start_process(['ros2', 'run', 'siam_tracker_ros', 'video_publisher',
                               '--ros-args', '-p', f'source:={video}', '-p', 'rate:=30.0',
                               '-p', 'loop:=true'], env, work / 'publisher.log')
    try:
        # A fresh diagnostics message says this tracker is up with its model (the graph may
        # still list the nodes of an earlier launch for a while).
        assert diagnostics.wait_for(model_ready, timeout=120.0) is not None, \
            (work / 'tracker.log').read_text()
        yield {'env': env, 'work': work, 'tracker': tracker, 'publisher': publisher}
    finally:
        codes = [stop_process(publisher), stop_process(tracker, timeout=20.0)]
    assert codes == [0, 0], [(work / name).read_text()[-2000:]
                             for name in ('publisher.log', 'tracker.log')]


def cli(env, *args, timeout=60.0):
    return run(['siam-tracker-cli', *args], env, timeout=timeout)


def test_echo_while_idle_says_why_and_exits_3(readme_pair):
    env = readme_pair['env']
    # 5 s: long enough for discovery on a loaded machine, so the silence is the tracker's.
    out = cli(env, 'echo', '--once', '--timeout', '5')
    assert out.returncode == 3, out.stdout
    assert ('no TrackedObject on /siam_tracker/tracked for 5 s: the tracker publishes only '
            'while a target is set') in out.stdout, out.stdout
    out = cli(env, '--timeout', '1', 'echo', '--count', '2', '--node', '/nobody')
    assert out.returncode == 3, out.stdout
    assert 'no TrackedObject on /nobody/tracked for 1 s: no node publishes it' in out.stdout


@pytest.fixture(scope='module')
def tracking(readme_pair, client):
    """Set the target with siam-tracker-cli, as a user would, on bag's first GT box."""
    tracked = client.collect(TrackedObject, '/siam_tracker/tracked', 100)
    x, y, w, h = BAG_GT.read_text().splitlines()[0].split(',')
    out = cli(readme_pair['env'], 'set-target', x, y, w, h, '--wait', '90', timeout=120.0)
    assert out.returncode == 0 and re.search(r'^target \d+', out.stdout, re.M), out.stdout
    return tracked


def test_readme_pair_gives_finite_bearings(tracking):
    width, height = 480, 360          # bag.avi; CameraInfo: ideal pinhole, hfov 60 deg
    fx = (width / 2.0) / math.tan(math.radians(30.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    assert tracking.wait_for(start=10, timeout=30.0) is not None
    for msg in tracking.messages[:10]:
        assert msg.state in (TrackedObject.TRACKING, TrackedObject.LOST,
                             TrackedObject.SEARCHING)
        assert math.isfinite(msg.azimuth) and math.isfinite(msg.elevation), msg
        u = msg.box.x + msg.box.width / 2.0
        v = msg.box.y + msg.box.height / 2.0
        assert msg.azimuth == pytest.approx(math.atan((u - cx) / fx), abs=1e-6)
        xn, yn = (u - cx) / fx, (v - cy) / fx
        assert msg.elevation == pytest.approx(math.atan2(-yn, math.hypot(xn, 1.0)), abs=1e-6)


def test_echo_timeout_is_the_longest_silence_not_the_whole_run(tracking, readme_pair):
    # 240 messages at 30 Hz take 8 s or more: longer than --timeout 5, given after 'echo'.
    out = cli(readme_pair['env'], 'echo', '--count', '240', '--timeout', '5')
    assert out.returncode == 0, out.stdout
    lines = [line for line in out.stdout.splitlines() if ' id=' in line]
    assert len(lines) == 240, out.stdout
    assert all(re.search(r'az=[+-]\d+\.\d+deg el=[+-]\d+\.\d+deg', line) for line in lines)


def test_set_target_without_a_model_says_no_model_once(env, client, tmp_path):
    name = 'siam_tracker_no_model'
    log = tmp_path / 'node.log'
    proc = start_process(['ros2', 'run', 'siam_tracker_ros', 'tracker_node', '--ros-args',
                          '-r', f'__node:={name}', '-r', 'image:=/no_model/image'], env, log)
    try:
        out = cli(env, '--node', name, 'set-target', '10', '10', '20', '20', '--timeout', '30')
    finally:
        code = stop_process(proc)
    assert out.returncode == 1, out.stdout
    assert 'model_path' in out.stdout, out.stdout
    assert out.stdout.count('no model') <= 1, out.stdout
    assert code == 0, log.read_text()
