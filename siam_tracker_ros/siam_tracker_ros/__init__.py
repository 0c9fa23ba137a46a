"""siam_tracker_ros: Siamese single-object tracking for ROS 2."""

__version__ = '0.1.0'
