"""
The plain Siamese step: SiamRPN++ / NanoTrack's tracking procedure, nothing more.

It follows pysot's ``SiamRPNTracker`` and NanoTrack's ``NanoTracker``, the procedure the
published weights were tuned with: the template is cut once around the target with context;
each search cuts a window ``instance_size / exemplar_size`` times the template context around
a centre, scores the candidates with scale / aspect-ratio penalties and a cosine window, moves
the centre to the best one and smooths the size with a score-scaled learning rate, then clips.

``SiameseStep`` holds no target state: the caller passes the centre, size and template
features, so the long-term controller (core/tracker.py) can run it on any window it likes
(the tracking window, re-detection windows, a masked probe) without copying any of it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from .config import StepConfig
from .crop import context_size, crop_window, to_blob
from .decode import Candidates, make_decoder, select_candidate, Selection
from .manifest import ModelSpec

Features = Tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Search:
    """One search-branch run: where, at what scale, the crop and the decoded candidates."""

    center: Tuple[float, float]
    scale_z: float
    cands: Candidates
    crop: Optional[np.ndarray] = None
    # A temporal model's run with earlier frames: this crop's un-shifted search features.
    xf: Optional[np.ndarray] = None

    def with_scores(self, scores: np.ndarray) -> 'Search':
        """Return the same run with the candidates' scores replaced (penalised)."""
        return replace(self, cands=replace(self.cands, scores=scores))

    def positions(self) -> Tuple[np.ndarray, np.ndarray]:
        """Image x, y of every candidate."""
        boxes = self.cands.boxes
        return (self.center[0] + boxes[0] / self.scale_z,
                self.center[1] + boxes[1] / self.scale_z)


class SiameseStep:
    """The authors' crop / run / decode / select / smooth / clip, over one backend."""

    def __init__(self, spec: ModelSpec, backend, config: StepConfig):
        """Take the model, its backend and the step's geometry."""
        self.spec = spec
        self.backend = backend
        self.config = config
        self.decoder = make_decoder(spec)
        self.pad_color = (0.0, 0.0, 0.0)

    @property
    def temporal(self) -> int:
        """Previous frames whose search features the backend's model takes (0: none)."""
        return int(getattr(self.backend, 'temporal', 0) or 0)

    def template_window(self, size) -> float:
        """Side in image pixels of the template window of a target of ``size`` (w, h)."""
        return context_size(size[0], size[1], self.config.context_amount)

    def search_window(self, size) -> Tuple[float, float]:
        """(scale_z, s_x) for a target of ``size`` (w, h)."""
        cfg = self.config
        s_z = self.template_window(size)
        return cfg.exemplar_size / s_z, s_z * (cfg.instance_size / cfg.exemplar_size)

    def template_crop(self, image: np.ndarray, center, size, pad_color=None) -> np.ndarray:
        """
        Cut the template window of a target at ``center`` with ``size`` (what init encodes).

        Padded with ``pad_color``, by default the first frame's (``self.pad_color``).
        """
        s_z = round(self.template_window(size))
        return crop_window(image, center, max(int(s_z), 1), self.config.exemplar_size,
                           self.pad_color if pad_color is None else pad_color)

    def encode(self, image: np.ndarray, center, size, pad_color=None) -> Features:
        """Template features of the box at ``center`` with ``size`` (see template_crop)."""
        crop = self.template_crop(image, np.asarray(center, dtype=np.float64),
                                  np.asarray(size, dtype=np.float64), pad_color)
        return tuple(self.backend.encode_template(to_blob(crop)))

    def search_crop(self, image: np.ndarray, center, size) -> Tuple[np.ndarray, float]:
        """Cut the search window around ``center`` for a target of ``size``: (crop, scale_z)."""
        scale_z, s_x = self.search_window(size)
        crop = crop_window(image, center, max(int(round(s_x)), 1), self.config.instance_size,
                           self.pad_color)
        return crop, scale_z

    def run_crop(self, crop: np.ndarray, center, scale_z: float, features: Features,
                 previous: Optional[Sequence[np.ndarray]] = None) -> Search:
        """
        Run the search branch on a search crop cut around ``center``.

        ``previous`` (a temporal model only): earlier frames' search features, oldest first
        (empty on the first frame); the result then carries this crop's in ``xf``.
        """
        if previous is None:
            cls, reg = self.backend.track(features, to_blob(crop))
            xf = None
        else:
            cls, reg, xf = self.backend.track_temporal(features, to_blob(crop), previous)
        return Search((float(center[0]), float(center[1])), scale_z,
                      self.decoder.decode(cls, reg), crop, xf)

    def choose(self, search: Search, size, window_influence: Optional[float] = None
               ) -> Selection:
        """Choose the best candidate: penalties and (by default the configured) cosine window."""
        cfg = self.config
        influence = cfg.window_influence if window_influence is None else window_influence
        z = search.scale_z
        return select_candidate(search.cands, size[0] * z, size[1] * z, cfg.penalty_k,
                                influence)

    def box_of(self, search: Search, pick: Selection, size,
               image_shape) -> Tuple[np.ndarray, np.ndarray]:
        """
        Centre and size of the chosen candidate: the size smoothed and both clipped.

        The one place the authors' smoothing (rate ``lr`` times the penalised score) and
        clipping (centre inside the image, sides between ``min_size`` and the image) live.
        """
        cfg = self.config
        dx, dy, bw, bh = search.cands.boxes[:, pick.index] / search.scale_z
        lr = pick.penalty * pick.score * cfg.lr
        height, width = image_shape[:2]
        # float64 centre: a Python float plus a float32 offset stays float32 under NumPy 2.
        center = np.asarray(search.center, dtype=np.float64)
        cx = min(max(center[0] + dx, 0.0), width)
        cy = min(max(center[1] + dy, 0.0), height)
        w = min(max(size[0] * (1 - lr) + bw * lr, cfg.min_size), width)
        h = min(max(size[1] * (1 - lr) + bh * lr, cfg.min_size), height)
        return np.array([cx, cy]), np.array([w, h])

    def map_side(self, search: Search) -> int:
        """Side of the score map (cells)."""
        count = self.spec.anchors.count if self.spec.decoder == 'anchor' else 1
        return int(round(math.sqrt(search.cands.window.size // count)))

    def target_radius_cells(self, size, scale_z: float) -> int:
        """Half the target's side in score-map cells (at least 1)."""
        side = math.sqrt(size[0] * size[1]) * scale_z / self.spec.stride
        return max(1, int(round(0.5 * side)))

    def check_sizes(self, exemplar_size: int, instance_size: int) -> None:
        """Run one template encoding, one search and one decode on blank crops of these sizes."""
        features = self.backend.encode_template(
            np.zeros((1, 3, exemplar_size, exemplar_size), np.float32))
        self.decoder.decode(*self.backend.track(
            features, np.zeros((1, 3, instance_size, instance_size), np.float32)))
