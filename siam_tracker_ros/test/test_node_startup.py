"""tracker_node start-up: refused parameters give one clear line and exit 2; signals exit 0.

No model is needed: parameters are checked before the model loads, and a node without a model
still runs (and reports it) until it is stopped.
"""
import os
import signal
import subprocess
import time

import pytest

from ros_helpers import python_module_cmd, require_interfaces, ros_env

require_interfaces()

from siam_tracker_ros.tooling.isolation import start_process, stop_process  # noqa: E402

NODE = 'siam_tracker_ros.ros.tracker_node'


@pytest.mark.parametrize('param,expect', [
    ('frame_buffer_size:=0', ['frame_buffer_size', 'Min: 1, Max: 600', '0']),
    ('frame_buffer_size:=601', ['frame_buffer_size', 'Max: 600', '601']),
    ('diagnostics_period:=0.0', ['diagnostics_period', 'Min: 0.1', '0.0']),
    ('tracker.found_threshold:=5.0', ['tracker.found_threshold', 'Max: 1.0', '5.0']),
    ('image_transport:=foo', ['image_transport', "'foo'", 'raw, compressed']),
    ('backend:=tensorflow', ['backend', 'auto, tensorrt, onnxruntime, torch']),
    ('qos_reliability:=sometimes', ['qos_reliability', 'best_effort, reliable']),
    ('mono16_scaling:=log', ['mono16_scaling', 'minmax, shift']),
    ('device:=gpu', ['device', "'gpu'", 'cpu, cuda or cuda:N']),
])
def test_a_refused_start_up_parameter_is_one_line_and_exit_2(ros_domain, param, expect):
    env = ros_env(ros_domain)
    res = subprocess.run(python_module_cmd(NODE, '-p', param), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60, check=False)
    err = res.stderr.decode()
    lines = [ln for ln in err.splitlines() if ln.startswith('siam_tracker:')]
    assert res.returncode == 2, err
    assert 'Traceback' not in err and len(lines) == 1, err
    assert all(part in lines[0] for part in expect), lines[0]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_exit_0_without_a_traceback(ros_domain, tmp_path, sig):
    env = ros_env(ros_domain)
    log = tmp_path / 'node.log'
    proc = start_process(python_module_cmd(NODE, '-p', 'diagnostics_period:=0.2'), env, log)
    try:
        deadline = time.monotonic() + 30
        while 'no model' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)   # up and running: it has reported its missing model
        assert proc.poll() is None, log.read_text()
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        stop_process(proc)
    assert 'Traceback' not in log.read_text()
