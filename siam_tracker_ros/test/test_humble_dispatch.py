"""
Humble's subscription dispatch: the stand-in (humble_dispatch/sitecustomize.py) and the node.

`make test` runs the node and demo tests a second time with humble_dispatch/ first on
PYTHONPATH, ROS_DISTRO=humble and SIAM_HUMBLE_LEG=1 (the Humble leg). These tests check that
the stand-in really behaves like Humble's rclpy 3.3 (message-only callbacks, no
Subscription.CallbackType), that the leg is on when it says so, and that isolation then uses
ROS_LOCALHOST_ONLY.
"""
import os
from pathlib import Path
import subprocess
import sys

import pytest

HERE = Path(__file__).resolve().parent
STAND_IN = HERE / 'humble_dispatch'

PROBE = r"""
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.subscription import Subscription
from std_msgs.msg import String
from siam_tracker_ros.ros import compat

rclpy.init()
node = rclpy.create_node('humble_probe')
got, errors = [], []
node.create_subscription(String, 'probe', lambda msg: got.append(('one', msg.data)), 10)
node.create_subscription(String, 'probe', lambda msg, info: got.append(('two', info)), 10)
pub = node.create_publisher(String, 'probe', 10)
executor = SingleThreadedExecutor()
executor.add_node(node)
for _ in range(50):
    pub.publish(String(data='x'))
    try:
        executor.spin_once(timeout_sec=0.05)
    except TypeError as exc:
        errors.append(str(exc))
    if len(got) >= 3 and (errors or any(k == 'two' for k, _ in got)):
        break
print('CALLBACK_TYPE', hasattr(Subscription, 'CallbackType'))
print('PASSES_INFO', compat.subscription_passes_message_info())
print('ONE', sum(1 for k, _ in got if k == 'one') > 0)
print('TWO_WITH_INFO', any(k == 'two' and isinstance(v, dict) for k, v in got))
print('TWO_TYPEERROR', any("missing 1 required positional argument: 'info'" in e
                          for e in errors))
rclpy.shutdown()
"""


def _probe(ros_domain, humble: bool) -> dict:
    pytest.importorskip('rclpy')
    env = dict(os.environ)
    path = [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
            if p and Path(p).resolve() != STAND_IN]
    if humble:
        path.insert(0, str(STAND_IN))
    env['PYTHONPATH'] = os.pathsep.join(path)
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60, check=False).stdout.decode()
    keys = ('CALLBACK_TYPE', 'PASSES_INFO', 'ONE', 'TWO_WITH_INFO', 'TWO_TYPEERROR')
    values = {line.split(' ')[0]: line.split(' ')[-1] == 'True'
              for line in out.splitlines() if line.split(' ')[0] in keys}
    assert set(values) == set(keys), out
    return values


def test_the_stand_in_dispatches_like_humble(ros_domain):
    """Message-only callbacks; a callback that needs MessageInfo fails as on Humble."""
    humble = _probe(ros_domain, humble=True)
    assert humble == {'CALLBACK_TYPE': False, 'PASSES_INFO': False, 'ONE': True,
                      'TWO_WITH_INFO': False, 'TWO_TYPEERROR': True}


def test_without_the_stand_in_rclpy_passes_message_info(ros_domain):
    if os.environ.get('SIAM_HUMBLE_LEG'):
        pytest.skip('the Humble leg runs every process with the stand-in')
    jazzy = _probe(ros_domain, humble=False)
    assert jazzy == {'CALLBACK_TYPE': True, 'PASSES_INFO': True, 'ONE': True,
                     'TWO_WITH_INFO': True, 'TWO_TYPEERROR': False}


def test_the_humble_leg_is_on_when_it_says_so(ros_domain):
    """SIAM_HUMBLE_LEG=1 means this very process dispatches the Humble way."""
    if not os.environ.get('SIAM_HUMBLE_LEG'):
        pytest.skip('not the Humble leg (make test runs it second)')
    from rclpy.subscription import Subscription
    from siam_tracker_ros.ros import compat
    assert not hasattr(Subscription, 'CallbackType')
    assert not compat.subscription_passes_message_info()
    assert os.environ.get('ROS_LOCALHOST_ONLY') == '1'
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in os.environ


@pytest.mark.parametrize('distro,expect', [
    ('humble', {'ROS_LOCALHOST_ONLY': '1'}),
    ('HUMBLE', {'ROS_LOCALHOST_ONLY': '1'}),
    ('iron', {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}),
    ('jazzy', {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}),
    ('', {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}),
])
def test_isolation_uses_the_variable_the_distro_reads(distro, expect):
    from siam_tracker_ros.tooling.isolation import isolated_env
    base = {'ROS_DISTRO': distro, 'ROS_LOCALHOST_ONLY': '0',
            'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'}
    env = isolated_env(42, base=base)
    got = {k: env[k] for k in ('ROS_LOCALHOST_ONLY', 'ROS_AUTOMATIC_DISCOVERY_RANGE')
           if k in env}
    assert got == expect and env['ROS_DOMAIN_ID'] == '42'
