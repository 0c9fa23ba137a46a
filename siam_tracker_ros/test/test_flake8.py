"""ament_flake8 on the whole package (ament's configuration: 99 columns, plugin set)."""
from pathlib import Path

import pytest

try:
    from ament_flake8.main import main_with_errors
except ModuleNotFoundError:  # the JetPack leg has no ament linters
    pytest.skip('needs ament_flake8 (make setup installs it)', allow_module_level=True)

PACKAGE_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.flake8
@pytest.mark.linter
# flake8-import-order 0.18 (pinned in requirements-ros.txt) imports pkg_resources.
@pytest.mark.filterwarnings('ignore:pkg_resources is deprecated:DeprecationWarning')
def test_flake8(monkeypatch):
    # ament_flake8 looks for AMENT_IGNORE under the working directory: make it the package's.
    monkeypatch.chdir(PACKAGE_DIR)
    rc, errors = main_with_errors(argv=[str(PACKAGE_DIR)])
    assert rc == 0, \
        'Found %d code style errors / warnings:\n' % len(errors) + \
        '\n'.join(errors)
