"""The Siamese tracker: crop, run the backend, decode, select, smooth, clip.

It follows the SiamRPN++ / NanoTrack tracking procedure the published weights were tuned with
(pysot's ``SiamRPNTracker`` and NanoTrack's ``NanoTracker``): the template is cut once at
``init``; each ``update`` cuts a search window 255/127 times the template context around the
last centre, scores the candidates with scale/aspect-ratio penalties and a cosine window, moves
the centre to the best one and smooths the size with a score-scaled learning rate.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .config import TrackerConfig, validated
from .crop import context_size, crop_window, to_blob
from .decode import make_decoder, select_candidate
from .manifest import ModelSpec
from .types import BBox, TrackResult, TrackState

# Fields whose change needs a new template (crop geometry); the others apply on the next frame.
_GEOMETRY_FIELDS = ('exemplar_size', 'instance_size', 'context_amount')


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is an HxWx3 uint8 array (BGR)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, 'shape', None)
        raise ValueError(f'expected an HxWx3 BGR image, got shape {shape}')
    if image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {image.dtype}')


class SiameseTracker:
    """Single-object Siamese tracker over any backend (see backends.base.Backend)."""

    def __init__(self, spec: ModelSpec, backend, config: Optional[TrackerConfig] = None):
        self.spec = spec
        self.backend = backend
        self._config = validated(config if config is not None else spec.tracker)
        self._decoder = make_decoder(spec)
        self.state = TrackState.IDLE
        self.features: Tuple[np.ndarray, ...] = ()
        self.center = np.zeros(2)
        self.size = np.zeros(2)
        self.pad_color = (0.0, 0.0, 0.0)
        self.last_result: Optional[TrackResult] = None
        self.last_stage_ms: Dict[str, float] = {}

    @property
    def config(self) -> TrackerConfig:
        """The configuration in force."""
        return self._config

    def set_config(self, config: TrackerConfig) -> None:
        """Change the configuration; crop-geometry changes are refused while a target is set."""
        config = validated(config)
        if self.state != TrackState.IDLE:
            changed = [f for f in _GEOMETRY_FIELDS
                       if getattr(config, f) != getattr(self._config, f)]
            if changed:
                raise ValueError(f'{", ".join(changed)} cannot change while tracking; '
                                 'stop, change, then set the target again')
        self._config = config

    def init(self, image: np.ndarray, box: BBox) -> TrackResult:
        """Take the target in ``box`` (x, y, w, h, 0-based pixels) of a BGR frame."""
        check_image(image)
        height, width = image.shape[:2]
        problem = box.validation_error(width, height)
        if problem:
            raise ValueError(problem)
        cfg = self._config
        self.center = np.array([box.x + (box.w - 1) / 2.0, box.y + (box.h - 1) / 2.0])
        self.size = np.array([box.w, box.h], dtype=np.float64)
        # Upstream stores the channel mean in a uint8 frame, which truncates it.
        self.pad_color = tuple(float(np.floor(c)) for c in cv2.mean(image)[:3])
        s_z = round(context_size(box.w, box.h, cfg.context_amount))
        crop = crop_window(image, self.center, max(int(s_z), 1), cfg.exemplar_size,
                           self.pad_color)
        self.features = tuple(self.backend.encode_template(to_blob(crop)))
        self.state = TrackState.TRACKING
        self.last_result = TrackResult(box, 1.0, TrackState.TRACKING, 1.0)
        return self.last_result

    def update(self, image: np.ndarray) -> TrackResult:
        """Track the target into the next frame."""
        if self.state == TrackState.IDLE:
            raise RuntimeError('no target: call init(image, box) first')
        check_image(image)
        cfg = self._config
        t0 = time.perf_counter()
        s_z = context_size(self.size[0], self.size[1], cfg.context_amount)
        scale_z = cfg.exemplar_size / s_z
        s_x = s_z * (cfg.instance_size / cfg.exemplar_size)
        crop = crop_window(image, self.center, max(int(round(s_x)), 1), cfg.instance_size,
                           self.pad_color)
        blob = to_blob(crop)
        t1 = time.perf_counter()
        cls, reg = self.backend.track(self.features, blob)
        t2 = time.perf_counter()
        cands = self._decoder.decode(cls, reg)
        pick = select_candidate(cands, self.size[0] * scale_z, self.size[1] * scale_z,
                                cfg.penalty_k, cfg.window_influence)
        dx, dy, bw, bh = cands.boxes[:, pick.index] / scale_z
        lr = pick.penalty * pick.score * cfg.lr
        cx = self.center[0] + dx
        cy = self.center[1] + dy
        w = self.size[0] * (1 - lr) + bw * lr
        h = self.size[1] * (1 - lr) + bh * lr
        height, width = image.shape[:2]
        cx = min(max(cx, 0.0), width)
        cy = min(max(cy, 0.0), height)
        w = min(max(w, cfg.min_size), width)
        h = min(max(h, cfg.min_size), height)
        self.center = np.array([cx, cy])
        self.size = np.array([w, h])
        state = TrackState.TRACKING if pick.score >= cfg.found_threshold else TrackState.LOST
        self.state = state
        result = TrackResult(BBox.from_center(cx, cy, w, h), pick.score, state, pick.score)
        t3 = time.perf_counter()
        self.last_stage_ms = {'crop': (t1 - t0) * 1e3, 'network': (t2 - t1) * 1e3,
                              'decode': (t3 - t2) * 1e3, 'step': (t3 - t0) * 1e3}
        self.last_result = result
        return result

    def stop(self) -> None:
        """Forget the target."""
        self.state = TrackState.IDLE
        self.features = ()
        self.last_result = None
