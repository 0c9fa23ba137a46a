"""Tooling shared by the CLIs and the tests (process isolation); no ROS imports."""
