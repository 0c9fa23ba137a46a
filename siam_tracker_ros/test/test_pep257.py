"""ament_pep257 on the whole package (ament's docstring convention)."""
from pathlib import Path

import pytest

try:
    from ament_pep257.main import main
except ModuleNotFoundError:  # the JetPack leg has no ament linters
    pytest.skip('needs ament_pep257 (make setup installs it)', allow_module_level=True)

PACKAGE_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    rc = main(argv=[str(PACKAGE_DIR)])
    assert rc == 0, 'Found code style errors / warnings'
