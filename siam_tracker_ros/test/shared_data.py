"""Where the evaluation data beside the repository lives, and skip markers for it."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get('SIAM_SHARED', REPO.parent / 'shared'))
MODELS = SHARED / 'reference-models'
V3_WEIGHTS = MODELS / 'nanotrack-v3' / 'nanotrackv3.pth'
SEQUENCES = SHARED / 'sequences'
VIDEOS = SHARED / 'videos'


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when ``path`` is absent."""
    if not path.exists():
        pytest.skip(f'{path} is absent (evaluation data in ../shared; set SIAM_SHARED)')
    return path


def bag_crops():
    """(template 1x3x127x127, search 1x3x255x255) float32 crops around bag's first GT box."""
    import cv2

    from siam_tracker_ros.core.crop import context_size, crop_window, to_blob
    seq = need(SEQUENCES / 'bag')
    frame = sorted((seq / 'img').glob('*.jpg'))[0]
    image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
    x, y, w, h = (float(v) for v in
                  (seq / 'groundtruth.txt').read_text().splitlines()[0].split(','))
    center = (x + w / 2 - 0.5, y + h / 2 - 0.5)
    s_z = context_size(w, h, 0.5)
    mean = image.reshape(-1, 3).mean(0)
    return (to_blob(crop_window(image, center, round(s_z), 127, mean)),
            to_blob(crop_window(image, center, round(s_z * 255 / 127), 255, mean)))
