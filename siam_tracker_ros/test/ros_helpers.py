"""
Shared helpers of the ROS tests: environment, processes, an in-process rclpy client.

Every graph these tests start runs on a private ROS_DOMAIN_ID (leased in 1..101, see
``siam_tracker_ros.tooling.isolation``) with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; processes
get their own session and are stopped through their process group.
"""
import atexit
import ctypes
import importlib
import math
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, List, Optional

import pytest

from shared_data import MODELS, REPO, VIDEOS

PKG_SRC = REPO / 'siam_tracker_ros'
INSTALL = REPO / 'install'
VENV = Path(sys.prefix)
IFACE_PREFIX = INSTALL / 'siam_tracker_interfaces'
IFACE_SITE = IFACE_PREFIX / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' \
    / 'site-packages'
MODEL_V3 = MODELS / 'nanotrack-v3'
BAG = VIDEOS / 'bag.avi'
BAG_GT = VIDEOS / 'bag.groundtruth.txt'
NOT_BUILT = ('siam_tracker_interfaces is not built: run `make setup` (colcon build into '
             'install/) or source a workspace that has it')


# The ROS processes' temporary files (launch_ros writes a launch_params_* file per node with
# dict parameters and never removes it) go to one folder, removed when the test run ends.
CHILD_TMP = tempfile.mkdtemp(prefix='siam-ros-tests-')
atexit.register(shutil.rmtree, CHILD_TMP, True)


def _skip(reason: str) -> None:
    pytest.skip(reason, allow_module_level=True)


def _preload_interface_libraries() -> None:
    """Load install/siam_tracker_interfaces/lib/*.so so that rmw finds them by soname."""
    order = ('rosidl_generator_c', 'rosidl_typesupport_c', 'rosidl_typesupport_introspection_c',
             'rosidl_typesupport_fastrtps_c', 'rosidl_typesupport_cpp',
             'rosidl_typesupport_introspection_cpp', 'rosidl_typesupport_fastrtps_cpp',
             'rosidl_generator_py')
    for part in order:
        lib = IFACE_PREFIX / 'lib' / f'libsiam_tracker_interfaces__{part}.so'
        if lib.is_file():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)


def _interfaces_ok() -> bool:
    try:
        module = importlib.import_module('siam_tracker_interfaces.msg')
    except ImportError:
        return False
    # Run from the repository root, the source folder siam_tracker_interfaces/ would import
    # as an empty namespace package; only the built package has the message classes.
    return hasattr(module, 'TrackedObject')


def require_interfaces() -> None:
    """Make siam_tracker_interfaces importable here (from install/) or skip the test."""
    if _interfaces_ok():
        return
    for name in [m for m in sys.modules if m.split('.')[0] == 'siam_tracker_interfaces']:
        del sys.modules[name]
    if not IFACE_SITE.is_dir():
        _skip(NOT_BUILT)
    # pytest was not started from a shell that sourced install/setup.sh: do its job here.
    sys.path.insert(0, str(IFACE_SITE))
    _preload_interface_libraries()
    importlib.invalidate_caches()
    if not _interfaces_ok():
        _skip(NOT_BUILT)


def require_ros2_cli() -> None:
    """Skip unless the ros2 CLI, launch and launch_ros are importable (ros-extra route)."""
    for module in ('ros2cli', 'launch', 'launch_ros', 'ros2launch', 'ros2topic',
                   'ros2service', 'ros2param'):
        if importlib.util.find_spec(module) is None:
            _skip(f'{module} is not importable: the ros2 CLI and launch come from '
                  '`make setup ROS_EXTRA=../shared/ros-extra` (pip-only route has none)')
    if not (INSTALL / 'siam_tracker_ros' / 'share' / 'siam_tracker_ros').is_dir():
        _skip('siam_tracker_ros is not in install/: run `make setup` (colcon build)')


def require_model() -> Path:
    """Return the NanoTrack v3 upstream folder in ../shared, or skip."""
    if not (MODEL_V3 / 'nanotrack_backbone.onnx').is_file():
        _skip(f'{MODEL_V3} is absent (reference models in ../shared; set SIAM_SHARED)')
    return MODEL_V3


_SOURCED_ENV = None


def _sourced_install_env() -> Optional[dict]:
    """os.environ after `source install/setup.sh` (what a user's shell has), or None."""
    global _SOURCED_ENV
    if _SOURCED_ENV is None and (INSTALL / 'setup.sh').is_file():
        out = subprocess.run(
            ['bash', '-c', f'source "{INSTALL}/setup.sh" >/dev/null 2>&1 && env -0'],
            stdout=subprocess.PIPE, env=dict(os.environ), check=False, timeout=60)
        if out.returncode == 0:
            _SOURCED_ENV = dict(item.split('=', 1) for item in
                                out.stdout.decode().split('\0') if '=' in item)
    return None if _SOURCED_ENV is None else dict(_SOURCED_ENV)


def ros_env(domain_id: int, cache_dir: Optional[Path] = None) -> dict:
    """Environment for ROS subprocesses: private domain, localhost, install/ + source tree."""
    from siam_tracker_ros.tooling.isolation import isolated_env

    env = isolated_env(domain_id, base=_sourced_install_env())

    def prepend(key, *paths):
        old = [p for p in env.get(key, '').split(os.pathsep) if p]
        parts = [str(p) for p in paths if p] + old
        env[key] = os.pathsep.join(dict.fromkeys(parts))
    # The source tree first: the package under test is the one in this checkout.
    prepend('PYTHONPATH', PKG_SRC, IFACE_SITE if IFACE_SITE.is_dir() else None)
    prepend('LD_LIBRARY_PATH', IFACE_PREFIX / 'lib' if IFACE_PREFIX.is_dir() else None)
    prepend('AMENT_PREFIX_PATH',
            *(p for p in (INSTALL / 'siam_tracker_ros', IFACE_PREFIX) if p.is_dir()), VENV)
    prepend('PATH', VENV / 'bin')
    # Let the wheels' bootstrapper add the venv libraries to LD_LIBRARY_PATH in each child.
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    if cache_dir is not None:
        env['SIAM_MODEL_CACHE'] = str(cache_dir)
    env['TMPDIR'] = CHILD_TMP
    return env


def python_module_cmd(module: str, *ros_args: str) -> List[str]:
    """Command that runs ``python -m module --ros-args ...``."""
    return [sys.executable, '-m', module, *(['--ros-args', *ros_args] if ros_args else [])]


def run(cmd, env, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a short command in its own session; kill its group if it overruns."""
    from siam_tracker_ros.tooling.isolation import stop_process

    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc, timeout=3.0)
        out, _ = proc.communicate()
        out += f'\n[timed out after {timeout} s]'
    return subprocess.CompletedProcess(cmd, proc.returncode, out, '')


def wait_for_text(log: Path, pattern: str, timeout: float) -> bool:
    """Return whether regex ``pattern`` appears in the ``log`` file within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text()):
            return True
        time.sleep(0.05)
    return False


def stop_ros2_daemon(env) -> None:
    """Stop a ros2 daemon of this domain, if a command started one."""
    ros2 = shutil.which('ros2', path=env.get('PATH'))
    if ros2:
        run([ros2, 'daemon', 'stop'], env, timeout=20.0)


class Collector:
    """Thread-safe list of the messages received on one subscription."""

    def __init__(self) -> None:
        """Start empty."""
        self.messages: list = []
        self._cond = threading.Condition()

    def __call__(self, msg) -> None:
        """Subscription callback."""
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable = lambda m: True, timeout: float = 10.0,
                 start: int = 0):
        """First message at index >= ``start`` satisfying ``predicate`` (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.messages):
                    msg = self.messages[index]
                    index += 1
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def __len__(self) -> int:
        """Return the number of messages so far."""
        with self._cond:
            return len(self.messages)


class RosClient:
    """An rclpy node of the test process, spun in a background thread on its own context."""

    def __init__(self, name: str = 'siam_test_client') -> None:
        """Initialise a private context (ROS_DOMAIN_ID must be set in os.environ before)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def collect(self, msg_type, topic: str, qos=10) -> Collector:
        """Subscribe ``topic`` into a new Collector."""
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def call(self, srv_type, name: str, request, timeout: float = 15.0):
        """Call a service and wait for the answer (fails the test on timeout)."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'no service {name}'
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _f: done.set())
            assert done.wait(timeout), f'no answer from {name} within {timeout} s'
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, **values):
        """Call SetParameters on another node; return the list of SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[
            Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParameters, f'{node_name}/set_parameters', request).results

    def get_parameters(self, node_name: str, *names: str):
        """Call GetParameters on another node; return the python values."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, f'{node_name}/get_parameters',
                             GetParameters.Request(names=list(names)))
        return [parameter_value_to_python(v) for v in response.values]

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        import rclpy
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def diag_values(status) -> dict:
    """Return the KeyValue list of a DiagnosticStatus as a dict."""
    return {kv.key: kv.value for kv in status.values}


def find_status(array, node_fqn: str):
    """Return the tracker's DiagnosticStatus in a DiagnosticArray (None when absent)."""
    for status in array.status:
        if status.name.startswith(f'{node_fqn}:'):
            return status
    return None


def is_nan(value) -> bool:
    """Return True for a float NaN."""
    return isinstance(value, float) and math.isnan(value)
