"""
tracker_node start-up: refused parameters give one clear line and exit 2; signals exit 0.

No model is needed: parameters are checked before the model loads, and a node without a model
still runs (and reports it) until it is stopped.
"""
import os
import signal
import subprocess
import time

import pytest

from ros_helpers import python_module_cmd, require_interfaces, ros_env, wait_for_text

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
        wait_for_text(log, 'model_path is empty', 30.0)   # up: it reported its missing model
        assert proc.poll() is None, log.read_text()
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        stop_process(proc)
    assert 'Traceback' not in log.read_text()


def test_precision_and_engine_cache_reach_the_tensorrt_backend(ros_domain, tmp_path):
    """
    backend:=tensorrt precision:=fp32 engine_cache:=DIR builds fp32 engines in DIR.

    TensorRT and cuda-python are the stand-ins of test/trt_standin (a simulated GPU running
    the graphs with ONNX Runtime), put on the node's PYTHONPATH.
    """
    import trt_standin
    from trt_standin.models import template_search

    from ros_helpers import diag_values, find_status, RosClient
    from diagnostic_msgs.msg import DiagnosticArray

    model = template_search(tmp_path / 'model', seed=3)
    cache = tmp_path / 'engines'
    env = ros_env(ros_domain)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(trt_standin.MODULES),
                                                    env.get('PYTHONPATH')) if p)
    log = tmp_path / 'node.log'
    proc = start_process(python_module_cmd(
        NODE, '-r', '__node:=trt_node', '-p', f'model_path:={model.root}', '-p',
        'backend:=tensorrt', '-p', 'device:=cuda', '-p', 'precision:=fp32', '-p',
        f'engine_cache:={cache}', '-p', 'diagnostics_period:=0.2'), env, log)
    client = RosClient()
    try:
        diags = client.collect(DiagnosticArray, '/diagnostics', 50)
        msg = diags.wait_for(lambda m: find_status(m, '/trt_node') is not None and diag_values(
            find_status(m, '/trt_node')).get('model_state') in ('ready', 'failed'), timeout=90)
        assert msg is not None, log.read_text()
        values = diag_values(find_status(msg, '/trt_node'))
        assert values['model_state'] == 'ready', log.read_text()
        assert values['backend'] == 'tensorrt' and values['device'].startswith('cuda')
        engines = sorted(p.name for p in cache.rglob('*.engine'))
        assert engines and all('fp32' in name for name in engines), engines
    finally:
        client.close()
        code = stop_process(proc)
    assert code == 0 and 'Traceback' not in log.read_text(), log.read_text()[-3000:]


def test_the_frame_buffer_is_capped_in_bytes_whatever_the_resolution(ros_domain, tmp_path):
    """frame_buffer_mb:=2 with 0.9 MB frames: at most two frames buffered, not 60."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ros_helpers import diag_values, find_status, RosClient
    from siam_tracker_ros.ros import conversions as conv

    env = ros_env(ros_domain)
    log = tmp_path / 'node.log'
    proc = start_process(python_module_cmd(
        NODE, '-r', '__node:=buffer_node', '-r', 'image:=/buffer/image', '-p',
        'frame_buffer_mb:=2', '-p', 'qos_reliability:=reliable', '-p',
        'diagnostics_period:=0.2'), env, log)
    client = RosClient('buffer_test_client')
    try:
        pub = client.node.create_publisher(Image, '/buffer/image', QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE))
        diags = client.collect(DiagnosticArray, '/diagnostics', 50)
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        frame = np.full((480, 640, 3), 7, np.uint8)   # 921600 bytes
        for k in range(12):
            pub.publish(conv.bgr_to_image(frame, Header(stamp=conv.ns_to_stamp(k + 1)), 'bgr8'))
            time.sleep(0.1)

        def settled(array):   # the subscription queue holds one frame: some may be replaced
            status = find_status(array, '/buffer_node')
            return status is not None and int(diag_values(status)['frames_received']) >= 4
        msg = diags.wait_for(settled, timeout=20)
        assert msg is not None, log.read_text()
        values = diag_values(find_status(msg, '/buffer_node'))
        assert values['frames_buffered'] == '2' and float(values['buffer_mb']) <= 2.0, values
    finally:
        client.close()
        assert stop_process(proc) == 0
