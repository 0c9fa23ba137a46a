#!/usr/bin/env bash
# The JetPack-dependency leg (run by .ci/run): the ROS-free parts of siam_tracker_ros on what a
# JetPack 6 machine has: Python 3.10 and requirements-jetpack.txt (numpy 1.26, OpenCV 4.8,
# onnxruntime 1.17, onnx 1.16, matplotlib 3.5), no ROS, no torch, in .venv-jetpack.
#  1. the Jetson route's own script (tools/setup_jetson.sh --no-trt-check: a venv with the
#     system site-packages, requirements-jetson.txt, onnxruntime, OpenCV, the package) with
#     requirements-jetpack.txt as pip constraints, then pytest from that file;
#  2. check the premise (no rclpy / torch / tensorrt importable) and `pip check` (the pins meet
#     setup.py's lower bounds);
#  3. run the whole test folder: core, eval, model import, the ONNX Runtime backend and the
#     CLIs run; tests that need rclpy, the built interfaces, torch, TensorRT or the ament
#     linters skip with the reason (pytest -rs lists them);
#  4. run siam-model and siam-eval as console scripts (fetch + check-backend on the CPU when
#     the reference models in ../shared are there).
#   usage: tools/jetpack_leg.sh [PYTEST_ARGS...]     e.g. tools/jetpack_leg.sh -k onnxruntime
#   env:   PYTHON   a Python 3.10 (default: python3.10 on PATH, else pyenv's 3.10.x)
#          SIAM_SHARED   evaluation data (default ../shared); absent, the tests that need it skip
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv-jetpack"
SHARED=${SIAM_SHARED:-$(cd "$ROOT/.." && pwd)/shared}
t0=$(date +%s)
step() { echo "== jetpack leg ($(( $(date +%s) - t0 ))s): $*"; }

is_py310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.10 "$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10 \
      "$HOME"/.pyenv/versions/3.10*/bin/python3.10; do
    if [ -n "$candidate" ] && is_py310 "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  echo "jetpack_leg.sh: no Python 3.10 found (tried \$PYTHON, python3.10, pyenv's 3.10.x);" \
    "install one (pyenv install 3.10) or set PYTHON" >&2
  return 1
}

py=$(find_python)
if [ -x "$VENV/bin/python" ] && ! grep -qi '^include-system-site-packages *= *true' \
    "$VENV/pyvenv.cfg"; then
  rm -rf "$VENV"   # made by an older version of this leg
fi
step "tools/setup_jetson.sh --no-trt-check, pinned by requirements-jetpack.txt"
PYTHON="$py" VENV="$VENV" PIP_CONSTRAINT="$ROOT/requirements-jetpack.txt" \
  OPENCV_PACKAGE=opencv-contrib-python-headless bash tools/setup_jetson.sh --no-trt-check
step "test tools (requirements-jetpack.txt)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-jetpack.txt
"$VENV/bin/python" -m pip check --disable-pip-version-check
"$VENV/bin/python" - <<'EOF'
import importlib.util
import platform
import sys

import cv2
import numpy
import onnx
import onnxruntime

present = [m for m in ('rclpy', 'torch', 'tensorrt') if importlib.util.find_spec(m)]
if present:
    sys.exit(f'jetpack leg: {present} importable in .venv-jetpack; the leg has no ROS, torch '
             'or TensorRT')
print(f'   Python {platform.python_version()}, numpy {numpy.__version__}, OpenCV '
      f'{cv2.__version__}, onnxruntime {onnxruntime.__version__} '
      f'({", ".join(onnxruntime.get_available_providers())}), onnx {onnx.__version__}')
EOF
step "setup done"

step "tests (no ROS, no torch, no TensorRT: those skip with the reason)"
tests_start=$(date +%s)
"$VENV/bin/python" -m pytest siam_tracker_ros/test -q -rs -p no:cacheprovider "$@"
step "tests took $(( $(date +%s) - tests_start ))s"

step "console scripts"
"$VENV/bin/siam-eval" --help >/dev/null
"$VENV/bin/siam-model" --help >/dev/null
if [ -f "$SHARED/reference-models/nanotrack-v3/nanotrack_backbone.onnx" ] \
    && [ -d "$SHARED/sequences/bag" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/siam-model" fetch nanotrack-v3 --mirror "$SHARED/reference-models" --out "$tmp/v3"
  "$VENV/bin/siam-model" check-backend --backend onnxruntime --device cpu "$tmp/v3" \
    --frames "$SHARED/sequences/bag" --count 4
else
  echo "   $SHARED/reference-models or sequences absent: siam-model fetch/check-backend not run"
fi
step "passed"
