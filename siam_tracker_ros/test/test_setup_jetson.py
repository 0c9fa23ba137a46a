"""
tools/setup_jetson.sh (make jetson-setup) without a Jetson.

The script runs for real, with ``--no-trt-check``, in the JetPack leg (tools/jetpack_leg.sh,
run by .ci/run: Python 3.10, pinned by requirements-jetpack.txt). Here: what its dry run would
do, and the venvs and arguments it refuses. Its TensorRT / CUDA part needs JetPack.
"""
import os
from pathlib import Path
import shutil
import subprocess
import sys
import venv

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'setup_jetson.sh'

pytestmark = pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')


def _run(*args, venv_dir=None):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop('PIP_CONSTRAINT', None)
    if venv_dir is not None:
        env['VENV'] = str(venv_dir)
    return subprocess.run(['bash', str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_lists_the_jetson_install_and_changes_nothing(tmp_path):
    target = tmp_path / 'venv'
    proc = _run('--dry-run', venv_dir=target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith('+ ')]
    assert commands[0] == f'+ {sys.executable} -m venv --system-site-packages {target} '
    pip = f'+ {target}/bin/python -m pip install -q --disable-pip-version-check '
    # numpy stays 1.x: onnxruntime / OpenCV, when this Python lacks them, resolve with it
    assert commands[1].startswith(pip + '-r requirements-jetson.txt ')
    assert commands[-1] == pip + ('--no-deps --no-build-isolation --use-pep517 -e '
                                  'siam_tracker_ros ')
    assert 'dry run: nothing installed' in proc.stdout
    assert not target.exists()


def test_a_venv_without_the_system_site_packages_is_refused(tmp_path):
    plain = tmp_path / 'plain'
    venv.create(plain, with_pip=False)
    proc = _run('--no-trt-check', venv_dir=plain)
    assert proc.returncode == 1
    assert 'without --system-site-packages' in proc.stderr


def test_unknown_arguments_are_refused():
    proc = _run('--fast')
    assert proc.returncode == 2 and 'unknown argument --fast' in proc.stderr
