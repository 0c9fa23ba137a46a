"""Where the evaluation data beside the repository lives, and skip markers for it."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get('SIAM_SHARED', REPO.parent / 'shared'))
MODELS = SHARED / 'reference-models'
SEQUENCES = SHARED / 'sequences'
VIDEOS = SHARED / 'videos'


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f'{path} is absent (evaluation data in ../shared; set SIAM_SHARED)')
    return path
