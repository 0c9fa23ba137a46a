#!/usr/bin/env bash
# Run a command inside the project environment: the venv, the ROS 2 setup written by ros-extra
# (when present) and the colcon workspace in install/.
#   usage: tools/ros_env.sh COMMAND [ARGS...]
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
# shellcheck disable=SC1091
source "$ROOT/.venv/bin/activate"
# shellcheck disable=SC1091
[ -f "$ROOT/.venv/setup.sh" ] && source "$ROOT/.venv/setup.sh"
export AMENT_PREFIX_PATH="$ROOT/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
[ -f "$ROOT/install/setup.sh" ] && COLCON_CURRENT_PREFIX="$ROOT/install" source "$ROOT/install/setup.sh"
exec "$@"
