#!/usr/bin/env bash
# The Jetson route (JetPack 6: Ubuntu 22.04, Python 3.10, aarch64, TensorRT 10, OpenCV 4.8):
#  1. a venv made with --system-site-packages, so JetPack's own tensorrt and cv2 (and ROS 2
#     Humble's Python packages, once /opt/ros/humble/setup.bash is sourced) stay in use;
#  2. requirements-jetson.txt (ranges; numpy stays 1.x), onnxruntime when none is importable,
#     OpenCV from PyPI only when JetPack's is not visible, the package (editable, --no-deps);
#  3. the checks: versions, `import tensorrt`, a CUDA binding (cuda-python, installed when
#     missing) and the GPU it opens; then it prints the next commands.
#   usage: tools/setup_jetson.sh [--dry-run] [--no-trt-check]      (make jetson-setup)
#     --dry-run       print the commands, run nothing (no venv, no install)
#     --no-trt-check  skip step 3's TensorRT / CUDA part (a machine without JetPack, e.g. the
#                     JetPack leg in CI, which runs this script for real with --no-trt-check)
#   env: PYTHON          interpreter (default python3; JetPack 6's is 3.10)
#        VENV            venv folder (default .venv: what tools/ros_env.sh and make use)
#        ORT_PACKAGE     onnxruntime to install when none is importable (default PyPI's CPU
#                        build 'onnxruntime>=1.17'); GPU: ORT_PACKAGE=onnxruntime-gpu with
#                        PIP_EXTRA_INDEX_URL set to the Jetson AI Lab index of your JetPack
#        OPENCV_PACKAGE  OpenCV from PyPI when JetPack's cv2 is not visible
#                        (default 'opencv-python-headless>=4.8')
#        CUDA_PYTHON     CUDA binding installed when none is importable (default
#                        'cuda-python>=12,<13', CUDA 12 as on JetPack 6)
#        PIP_CONSTRAINT  pip's own: pins for every install (the JetPack leg passes
#                        requirements-jetpack.txt)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DRY=0
TRT_CHECK=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --no-trt-check) TRT_CHECK=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_jetson.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
ORT_PACKAGE=${ORT_PACKAGE:-onnxruntime>=1.17}
OPENCV_PACKAGE=${OPENCV_PACKAGE:-opencv-python-headless>=4.8}
CUDA_PYTHON=${CUDA_PYTHON:-cuda-python>=12,<13}
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
t0=$(date +%s)
step() { echo "== jetson setup ($(( $(date +%s) - t0 ))s): $*"; }
run() {
  echo "+ $(printf '%q ' "$@")"
  if [ "$DRY" = 0 ]; then "$@"; fi
}
# True when MODULE imports in the venv (in a dry run: in $PYTHON, which the venv will see).
has_module() {
  local py=$PY
  [ "$DRY" = 1 ] && py=$PYTHON
  "$py" -c "import $1" 2>/dev/null
}

version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || {
  echo "setup_jetson.sh: cannot run PYTHON=$PYTHON" >&2
  exit 1
}
if [ "$version" != 3.10 ]; then
  echo "setup_jetson.sh: warning: $PYTHON is Python $version; JetPack 6 (and its TensorRT" \
    "bindings) is 3.10" >&2
fi
[ "$(uname -m)" = aarch64 ] || echo "   note: $(uname -m) is not a Jetson (aarch64)"

if [ -x "$PY" ]; then
  if ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
    echo "setup_jetson.sh: $VENV exists without --system-site-packages, so JetPack's" \
      "tensorrt and cv2 are invisible in it; remove it or set VENV to another folder" >&2
    exit 1
  fi
  step "reuse $VENV"
else
  step "venv with the system site-packages: $VENV"
  run "$PYTHON" -m venv --system-site-packages "$VENV"
fi

# onnxruntime and OpenCV only when this Python has none; resolved together with
# requirements-jetson.txt so that numpy stays 1.x (OpenCV >= 4.12 and 5.x need numpy 2).
extra=()
if has_module onnxruntime; then
  step "onnxruntime: keep the one this Python already imports"
else
  extra+=("$ORT_PACKAGE")
fi
if has_module cv2; then
  step "OpenCV: keep the cv2 this Python already imports (JetPack's on a Jetson)"
else
  step "OpenCV: no cv2 visible (JetPack's is not there): $OPENCV_PACKAGE from PyPI (CPU build)"
  extra+=("$OPENCV_PACKAGE")
fi
step "requirements-jetson.txt ${extra[*]}"
run "${PIP[@]}" -r requirements-jetson.txt "${extra[@]}"
step "siam_tracker_ros (editable, --no-deps)"
run "${PIP[@]}" --no-deps --no-build-isolation --use-pep517 -e siam_tracker_ros

if [ "$DRY" = 1 ]; then
  step "dry run: nothing installed, nothing checked"
  exit 0
fi

step "check the Python side"
"$PY" - <<'EOF'
import sys

import cv2
import numpy
import onnx
import onnxruntime

import siam_tracker_ros

problems = []
if int(numpy.__version__.split('.')[0]) >= 2:
    problems.append(f'numpy {numpy.__version__}: JetPack\'s OpenCV and TensorRT need numpy 1.x '
                    '(pip install "numpy>=1.26,<2")')
print(f'   Python {sys.version.split()[0]}, numpy {numpy.__version__}, OpenCV {cv2.__version__} '
      f'({cv2.__file__}), onnx {onnx.__version__}')
print(f'   onnxruntime {onnxruntime.__version__}: {", ".join(onnxruntime.get_available_providers())}')
if problems:
    sys.exit('setup_jetson.sh: ' + '; '.join(problems))
EOF

if [ "$TRT_CHECK" = 1 ]; then
  step "check TensorRT and the CUDA binding"
  if ! "$PY" -c 'import tensorrt' 2>/dev/null; then
    echo "setup_jetson.sh: 'import tensorrt' fails in $VENV. On JetPack 6: sudo apt install" \
      "python3-libnvinfer (Python 3.10, system site-packages); elsewhere --no-trt-check" >&2
    exit 1
  fi
  if ! "$PY" -c 'from siam_tracker_ros.backends.cuda import missing_bindings as m; import sys; sys.exit(bool(m()))'; then
    step "CUDA binding: $CUDA_PYTHON"
    run "${PIP[@]}" -r requirements-jetson.txt "$CUDA_PYTHON"
  fi
  "$PY" - <<'EOF'
import sys

import tensorrt

from siam_tracker_ros.backends.cuda import cuda_api, missing_bindings

missing = missing_bindings()
if missing:
    sys.exit(f'setup_jetson.sh: {missing}')
try:
    api = cuda_api(0)
    gpu = api.device_name()
except Exception as exc:  # noqa: BLE001 - driver errors come in several types
    sys.exit(f'setup_jetson.sh: the CUDA binding cannot open GPU 0: {exc}')
print(f'   TensorRT {tensorrt.__version__}, CUDA through {api.library}, GPU 0: {gpu}')
EOF
else
  step "TensorRT / CUDA checks skipped (--no-trt-check)"
fi

rel=${VENV#"$ROOT"/}
cat <<EOF
== jetson setup ($(( $(date +%s) - t0 ))s): done. Next (README "TensorRT on a Jetson"):
  source $rel/bin/activate
  siam-model fetch nanotrack-v3 --out ~/models/nanotrack-v3
  siam-model build-engine ~/models/nanotrack-v3 --fp16     # once per model / GPU / TensorRT
  siam-model check-backend --backend tensorrt ~/models/nanotrack-v3 --frames SEQUENCE_FOLDER
  ROS 2 Humble: source /opt/ros/humble/setup.bash, then build both packages with this venv's
  Python (python -m colcon build --symlink-install) so the node runs on it.
EOF
