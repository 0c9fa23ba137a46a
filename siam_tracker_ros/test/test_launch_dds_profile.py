"""
The launch files' dds_profile argument: the environment of the processes they start.

`ros2 launch` (ros-extra route) with the default (large_images), with none and with a bad
value; the started nodes' /proc/PID/environ shows what Fast DDS will read.
"""
import os
from pathlib import Path
import time

import pytest

from ros_helpers import require_interfaces, require_ros2_cli, ros_env, run, stop_ros2_daemon

require_ros2_cli()
require_interfaces()

from siam_tracker_ros.eval.synthetic import write_clip  # noqa: E402
from siam_tracker_ros.tooling.dds_profile import ENV_VARS  # noqa: E402
from siam_tracker_ros.tooling.isolation import start_process, stop_process  # noqa: E402


@pytest.fixture(scope='module')
def env(ros_domain, model_cache):
    env = ros_env(ros_domain, model_cache)
    for name in ENV_VARS:  # what the user's shell may have set must not decide the outcome
        env.pop(name, None)
    yield env
    stop_ros2_daemon(env)


def _group_processes(pgid):
    """Return {executable name: environ dict} of the processes in process group ``pgid``."""
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            cmdline = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
            environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        except (OSError, ProcessLookupError):
            continue
        words = [w.decode(errors='replace') for w in cmdline if w]
        for exe in ('tracker_node', 'video_publisher'):
            if any(w.endswith(exe) or w.endswith(f'ros.{exe}') for w in words):
                found[exe] = dict(item.decode(errors='replace').split('=', 1)
                                  for item in environ if b'=' in item)
    return found


def _launch_and_read_environ(env, args, want, log, timeout=60.0):
    proc = start_process(['ros2', 'launch', 'siam_tracker_ros', *args], env, log)
    try:
        deadline = time.monotonic() + timeout
        found = {}
        while time.monotonic() < deadline and proc.poll() is None:
            found = _group_processes(proc.pid)
            if set(want) <= set(found):
                break
            time.sleep(0.3)
        return found
    finally:
        stop_process(proc, timeout=20.0)


def test_show_args_lists_dds_profile(env):
    for launch_file in ('tracker.launch.py', 'demo.launch.py'):
        out = run(['ros2', 'launch', 'siam_tracker_ros', launch_file, '--show-args'], env)
        assert out.returncode == 0, out.stdout
        assert "'dds_profile':" in out.stdout and "default: 'large_images'" in out.stdout


def test_demo_launch_sets_the_profile_for_publisher_and_tracker(env, tmp_path):
    clip, _ = write_clip(tmp_path / 'clip.avi', frames=20)
    found = _launch_and_read_environ(env, ['demo.launch.py', f'video:={clip}', 'rate:=5'],
                                     ('tracker_node', 'video_publisher'), tmp_path / 'a.log')
    assert set(found) == {'tracker_node', 'video_publisher'}, (tmp_path / 'a.log').read_text()
    for exe, environ in found.items():
        for name in ENV_VARS:
            path = Path(environ[name])
            assert path.name == 'fastdds_large_images.xml' and path.is_file(), (exe, name)


def test_tracker_launch_none_leaves_the_environment(env, tmp_path):
    found = _launch_and_read_environ(env, ['tracker.launch.py', 'dds_profile:=none'],
                                     ('tracker_node',), tmp_path / 'b.log')
    assert 'tracker_node' in found, (tmp_path / 'b.log').read_text()
    assert not set(ENV_VARS) & set(found['tracker_node'])


def test_tracker_launch_with_an_xml_path_and_a_bad_value(env, tmp_path):
    own = tmp_path / 'own.xml'
    own.write_text('<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"/>')
    found = _launch_and_read_environ(env, ['tracker.launch.py', f'dds_profile:={own}'],
                                     ('tracker_node',), tmp_path / 'c.log')
    assert found['tracker_node'][ENV_VARS[0]] == str(own)
    out = run(['ros2', 'launch', 'siam_tracker_ros', 'tracker.launch.py',
               'dds_profile:=large-images'], env, timeout=60)
    assert out.returncode != 0
    assert 'large_images, none nor an existing .xml file' in out.stdout, out.stdout
