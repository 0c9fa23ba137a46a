"""The project's ROS interfaces (siam_tracker_interfaces), with a clear error when unbuilt."""
try:
    from siam_tracker_interfaces.msg import BoundingBox, GroundTruth, TrackedObject
    from siam_tracker_interfaces.srv import SetTarget
except ImportError as _exc:  # not built, not sourced, or the source folder shadows it
    raise ImportError(
        f'siam_tracker_interfaces is not importable ({_exc}); build it with `make setup` '
        '(colcon build) and `source install/setup.sh`') from _exc

__all__ = ['BoundingBox', 'GroundTruth', 'SetTarget', 'TrackedObject']
