"""
A scripted stand-in for a Siamese network: the tracker's behaviour tested without weights.

Scenes are scripted: flat grey frames (``BACKGROUND``) in which, frame by frame, the script
places the target (a square of one colour, ``TARGET``) and look-alikes (``LOOKALIKE``: a square
of a colour whose cosine similarity to the target's is about 0.8) at given positions and
contrasts (``alpha``: 1 = full colour, 0 = absent). ``render`` draws one frame.

``ScriptedBackend`` follows the Backend interface (backends/base.py) and stands in for a
NanoTrack-style anchor-free network (15x15 score map, stride 16, 127/255 crops), computing its
maps in closed form from the crops, so they always agree with the frames:

* ``encode_template``: the features are the crop, halved (64x64), blurred (sigma 3 feature
  pixels) and taken relative to the background colour. The appearance cue (cosine similarity of
  such features) is therefore 1 on the target, about 0.9 for a crop shifted by a tenth of the
  box, about 0.8 on a look-alike and 0 on empty background.
* ``track``: the template's target region (where the blurred features reach half their peak)
  is correlated with the search crop's features; the response ``R = <kernel, window> / <kernel,
  kernel>`` is the target's contrast where it lies (1 at full colour, ``alpha`` when faded, about
  0.8 on a look-alike, 0 on background). Each score-map cell takes the best response within its
  16-pixel cell (foreground logit ``GAIN * (R - 0.5)``) and regresses the box of the template's
  target size centred at that response. ``GAIN`` puts a full-contrast target at logit 12, where
  NanoTrack v3's confidently tracked frames are (the confidence's score cue is the absolute
  logit, with coefficients fitted on v3).

A model directory for it (``write_model_dir``) holds a manifest that ``core.manifest`` accepts
and verifies: both graph roles point at ``scripted.json`` (what the model is, and the hold file
below), hashed like any graph file. Load it with ``load_tracker(path,
backend='scripted_backend:create')`` (the plugin route of backends/registry.py) with this folder
on PYTHONPATH; a tracker node started with ``backend:=scripted_backend:create`` does the same.

``hold_file`` (a path in scripted.json): while that file exists, ``track`` waits (and shows it
by creating ``<hold_file>.held``), so a test can keep the tracker busy on a frame while it
publishes more, without relying on timing.
"""
from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
import time
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from siam_tracker_ros.backends.base import BackendError, Features
from siam_tracker_ros.core.manifest import ModelSpec, write_manifest

BACKGROUND = 128
TARGET = (110, -50, 30)       # BGR offsets from the background
LOOKALIKE = (50, -100, 50)    # cosine 0.79 with TARGET, about as strong
GAIN = 24.0
SCORE_SIZE = 15
STRIDE = 16
EXEMPLAR = 127
INSTANCE = 255
FEATURE_SIDE = 64
BLUR_SIGMA = 3.0
REGRESSION_REACH = 2 * STRIDE
HOLD_TIMEOUT_S = 60.0
MODEL_FILE = 'scripted.json'


@dataclass(frozen=True)
class Actor:
    """One square of a scripted frame: top-left corner, side, colour and contrast."""

    x: int
    y: int
    side: int = 40
    color: Tuple[int, int, int] = TARGET
    alpha: float = 1.0

    @property
    def box(self) -> Tuple[float, float, float, float]:
        """Its (x, y, w, h) box."""
        return (float(self.x), float(self.y), float(self.side), float(self.side))


def render(actors: Sequence[Optional[Actor]], width: int = 320,
           height: int = 240) -> np.ndarray:
    """One BGR frame: the background with the actors (None = nobody) drawn in order."""
    image = np.full((height, width, 3), float(BACKGROUND))
    for a in actors:
        if a is None or a.alpha <= 0:
            continue
        x0, y0 = max(a.x, 0), max(a.y, 0)
        x1, y1 = min(a.x + a.side, width), min(a.y + a.side, height)
        image[y0:y1, x0:x1] = BACKGROUND + a.alpha * np.asarray(a.color, dtype=float)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _features(crop_nchw: np.ndarray, side: int) -> np.ndarray:
    """Halved, blurred crop relative to the background, (side, side, 3) float32."""
    image = np.ascontiguousarray(crop_nchw[0].transpose(1, 2, 0), dtype=np.float32)
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    small = (small - BACKGROUND) / 128.0
    small[np.abs(small) < 0.5 / 128.0] = 0.0      # resampling noise on the flat background
    return cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_CONSTANT)


def _argmax_near(response: np.ndarray, off_y: np.ndarray, off_x: np.ndarray, py: float,
                 px: float, reach: float) -> Tuple[int, int]:
    """(i, j) of the best response centred within ``reach`` crop pixels of (px, py)."""
    rows = np.flatnonzero(np.abs(off_y - py) <= reach)
    cols = np.flatnonzero(np.abs(off_x - px) <= reach)
    block = response[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    k = int(np.argmax(block))
    return int(rows[0] + k // block.shape[1]), int(cols[0] + k % block.shape[1])


class ScriptedBackend:
    """Closed-form stand-in for an anchor-free Siamese network (see the module docstring)."""

    def __init__(self, spec: ModelSpec, device: str = 'cpu', hold_file: str = '') -> None:
        """Read the model's scripted.json; ``hold_file`` overrides the one written there."""
        if device != 'cpu':
            raise BackendError(f'the scripted backend runs on the CPU only, not {device!r}')
        params = json.loads(spec.path('search').read_text())
        if params.get('kind') != 'scripted':
            raise BackendError(f'{spec.path("search")} is not a scripted model file')
        self.name = 'scripted'
        self.device = device
        self.hold_file = hold_file or params.get('hold_file') or ''

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop (1, 3, 127, 127) -> features (1, 3, 64, 64)."""
        if crop.shape != (1, 3, EXEMPLAR, EXEMPLAR):
            raise BackendError(f'template crop must be 1x3x{EXEMPLAR}x{EXEMPLAR}, got '
                               f'{crop.shape}')
        f = _features(crop, FEATURE_SIDE)
        return (np.ascontiguousarray(f.transpose(2, 0, 1)[np.newaxis]),)

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop (1, 3, 255, 255) -> cls (1, 2, 15, 15), reg (1, 4, 15, 15)."""
        if search_crop.shape != (1, 3, INSTANCE, INSTANCE):
            raise BackendError(f'search crop must be 1x3x{INSTANCE}x{INSTANCE}, got '
                               f'{search_crop.shape}')
        self._wait_while_held()
        template = np.ascontiguousarray(features[0][0].transpose(1, 2, 0), dtype=np.float32)
        t_scale = EXEMPLAR / template.shape[0]
        energy = np.linalg.norm(template, axis=2)
        rows = np.flatnonzero(energy.max(axis=1) >= 0.5 * energy.max())
        cols = np.flatnonzero(energy.max(axis=0) >= 0.5 * energy.max())
        cls = np.zeros((1, 2, SCORE_SIZE, SCORE_SIZE), dtype=np.float32)
        reg = np.zeros((1, 4, SCORE_SIZE, SCORE_SIZE), dtype=np.float32)
        if energy.max() <= 1e-6:            # an empty template matches nothing
            cls[0, 1] = -GAIN / 2
            reg[:] = STRIDE
            return cls, reg
        kernel = template[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        kh, kw = kernel.shape[:2]
        side = int(round(INSTANCE / t_scale))        # 128: the template's scale
        s_scale = INSTANCE / side
        search = _features(search_crop, side)
        padded = cv2.copyMakeBorder(search, kh, kh, kw, kw, cv2.BORDER_CONSTANT, value=0)
        response = cv2.matchTemplate(padded, kernel, cv2.TM_CCORR) / float(np.sum(kernel ** 2))
        # Window (i, j) of the padded map is centred at these offsets from the crop centre.
        centre = (INSTANCE - 1) / 2.0 + 0.5
        off_y = (np.arange(response.shape[0]) - kh / 2.0) * s_scale - centre
        off_x = (np.arange(response.shape[1]) - kw / 2.0) * s_scale - centre
        box_w, box_h = kw * t_scale, kh * t_scale
        points = (np.arange(SCORE_SIZE) - SCORE_SIZE // 2) * STRIDE
        for a, py in enumerate(points):
            for b, px in enumerate(points):
                i, j = _argmax_near(response, off_y, off_x, py, px, STRIDE / 2)
                cls[0, 1, a, b] = GAIN * (float(response[i, j]) - 0.5)
                # Like a trained head, every cell near the target regresses the target's box.
                i, j = _argmax_near(response, off_y, off_x, py, px, REGRESSION_REACH)
                cx, cy = off_x[j], off_y[i]
                reg[0, :, a, b] = (px - (cx - box_w / 2), py - (cy - box_h / 2),
                                   cx + box_w / 2 - px, cy + box_h / 2 - py)
        return cls, reg

    def _wait_while_held(self) -> None:
        if not self.hold_file or not os.path.exists(self.hold_file):
            return
        marker = Path(self.hold_file + '.held')
        marker.touch()
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        try:
            while os.path.exists(self.hold_file):
                if time.monotonic() > deadline:
                    raise BackendError(f'{self.hold_file} still exists after '
                                       f'{HOLD_TIMEOUT_S:.0f} s')
                time.sleep(0.005)
        finally:
            marker.unlink(missing_ok=True)


def create(spec: ModelSpec, device: str = 'cpu', hold_file: str = '',
           **runtime_options) -> ScriptedBackend:
    """
    Backend factory, as the registry calls it (``backend='scripted_backend:create'``).

    ``runtime_options`` (what the node gives every backend: precision, engine cache folder)
    do not apply to closed-form maps and are ignored.
    """
    return ScriptedBackend(spec, device, hold_file)


def write_model_dir(root: Path, hold_file: Optional[Path] = None) -> Path:
    """Write a scripted model directory (manifest.json + scripted.json) at ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    params = {'kind': 'scripted', 'hold_file': str(hold_file) if hold_file else ''}
    (root / MODEL_FILE).write_text(json.dumps(params, indent=2) + '\n')
    spec = ModelSpec(root=root.resolve(), name='scripted', family='scripted',
                     decoder='anchor_free', layout='template_search', stride=STRIDE,
                     files={'template': MODEL_FILE, 'search': MODEL_FILE}, arch='scripted')
    write_manifest(spec)
    return root
