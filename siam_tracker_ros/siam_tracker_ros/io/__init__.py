"""Reading frames and ground truth: sequence folders, image folders, videos (no ROS)."""
