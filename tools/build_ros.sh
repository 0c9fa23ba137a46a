#!/usr/bin/env bash
# Build the two ROS 2 packages (siam_tracker_interfaces, siam_tracker_ros) with colcon inside
# the project venv, into ./build ./install ./log (git-ignored).
#   usage: tools/build_ros.sh [VENV]          (default VENV: .venv next to this script's parent)
#   env:   SIAM_COLCON_SYMLINK=0  build without --symlink-install
# Afterwards: source VENV/bin/activate && source install/setup.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "${1:-$ROOT/.venv}" && pwd)
cd "$ROOT"
if [ ! -x "$VENV/bin/colcon" ]; then
  echo "build_ros.sh: $VENV/bin/colcon not found; install colcon-common-extensions and the" >&2
  echo "  ros-jazzy-* wheels into the venv first (make setup)" >&2
  exit 1
fi
set +u
# shellcheck disable=SC1091
source "$VENV/bin/activate"
if [ -f "$VENV/setup.sh" ]; then
  # shellcheck disable=SC1091
  source "$VENV/setup.sh"   # written by ros-extra/install.sh (colcon merge-install into VENV)
fi
set -u
# The wheels need no AMENT_PREFIX_PATH for rclpy, but CMake must find the ament packages.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Children must not inherit the wheel bootstrapper's guard from a caller with another LD path.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

# The wheels' CMake export files carry their build machine's python paths; rewrite them
# (idempotent) when some are left, e.g. after pip-installing more ros-jazzy-* wheels.
if grep -rlq --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" "$VENV/lib/cmake" \
    2>/dev/null; then
  FIX="$ROOT/../shared/ros-extra/fix_cmake_paths.sh"
  if [ -n "${ROS_EXTRA:-}" ] && [ -f "$ROS_EXTRA/fix_cmake_paths.sh" ]; then
    FIX="$ROS_EXTRA/fix_cmake_paths.sh"
  fi
  if [ -f "$FIX" ]; then
    bash "$FIX" "$VENV"
  else
    PY="$VENV/bin/python"
    PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" "$VENV/lib/cmake" \
        2>/dev/null | xargs -0 -r sed -i \
        -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$SITE#g"
    echo "build_ros.sh: rewrote wheel cmake paths (include -> $PYINC, site-packages -> $SITE)"
  fi
fi

SYMLINK=(--symlink-install)
[ "${SIAM_COLCON_SYMLINK:-1}" = 0 ] && SYMLINK=()
start=$(date +%s)
colcon --log-base "$ROOT/log" build \
  --base-paths siam_tracker_interfaces siam_tracker_ros \
  --build-base "$ROOT/build" --install-base "$ROOT/install" \
  "${SYMLINK[@]}" \
  --event-handlers console_direct- console_cohesion+ \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
echo "build_ros.sh: colcon build took $(( $(date +%s) - start )) s; now run:"
echo "  source $VENV/bin/activate && source $ROOT/install/setup.sh"
