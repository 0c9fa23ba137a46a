"""Shared fixtures. ROS fixtures: a private ROS_DOMAIN_ID for the session (see ros_helpers)."""
import os

import pytest


@pytest.fixture(scope='session')
def ros_domain():
    """
    Lease a private ROS_DOMAIN_ID for this pytest run and put it in os.environ.

    Also restricts discovery to this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, or
    ROS_LOCALHOST_ONLY=1 where ROS_DISTRO is Humble), so neither this process's rclpy contexts
    nor the subprocesses (ros_helpers.ros_env) send DDS traffic off the machine.
    """
    from siam_tracker_ros.tooling.isolation import private_domain, restrict_to_localhost

    lease = private_domain()
    saved = {k: os.environ.get(k) for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                            'ROS_LOCALHOST_ONLY')}
    os.environ['ROS_DOMAIN_ID'] = str(lease.domain_id)
    restrict_to_localhost(os.environ)
    yield lease.domain_id
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    lease.release()


@pytest.fixture(scope='session')
def model_cache(tmp_path_factory):
    """Return a private SIAM_MODEL_CACHE (upstream model folders are imported into it)."""
    return tmp_path_factory.mktemp('model-cache')


@pytest.fixture(scope='session')
def v3_export(tmp_path_factory):
    """Return a model folder exported from the published NanoTrack v3 weights (needs torch)."""
    from shared_data import need, V3_WEIGHTS

    from siam_tracker_ros.nets.export import export_nanotrack
    need(V3_WEIGHTS)
    out = tmp_path_factory.mktemp('v3-export') / 'model'
    export_nanotrack(3, V3_WEIGHTS, out)
    return out
