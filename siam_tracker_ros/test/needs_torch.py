"""
Import first in a test module that needs PyTorch: without it, the module is skipped.

The skip says why (``pytest -rs``) instead of failing collection where PyTorch is absent (the
JetPack leg, a Jetson). An import, not a statement, so it stays first under import sorting.
"""
import pytest

pytest.importorskip('torch', reason='needs PyTorch (pip install torch)')
