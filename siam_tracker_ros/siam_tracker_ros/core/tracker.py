"""
The Siamese tracker: crop, run the backend, decode, select, smooth, clip.

It follows the SiamRPN++ / NanoTrack tracking procedure the published weights were tuned with
(pysot's ``SiamRPNTracker`` and NanoTrack's ``NanoTracker``): the template is cut once at
``init``; each ``update`` cuts a search window 255/127 times the template context around the
last centre, scores the candidates with scale/aspect-ratio penalties and a cosine window, moves
the centre to the best one and smooths the size with a score-scaled learning rate.

Long-term behaviour comes from policy objects configured by TrackerConfig fields, each off in
the 'plain' preset (which then reproduces the procedure above bit for bit):

* ``TemplateUpdater`` (update_*): gated moving-average template update, initial template kept;
* ``ConfidenceEstimator`` + ``LongTermState`` (conf_*, lt_*): calibrated confidence, the
  TRACKING / LOST / SEARCHING state machine and local-to-global re-detection; low-confidence
  frames do not move the published box. The confidence includes an appearance check (the
  chosen box re-encoded by the template branch and compared with the initial template), run
  every ``conf_appearance_interval`` frames while confidently tracking and on every other
  frame; re-detected matches must pass it and lie within one target size plus
  ``lt_reacquire_speed`` sizes per frame since the target was last tracked with re-acquisition
  confidence of where it was lost (farther ones become distractors, unless they resemble the
  initial template clearly better than the last re-acquired match did);
* ``DistractorMemory`` (distractor_*): penalise candidates on remembered look-alikes;
* ``ConstantVelocityKalman`` (motion_kalman): where to look through occlusions;
* camera-motion compensation (motion_camera): while the target is not tracked, the place it
  was last seen moves with the camera (sparse optical flow between consecutive frames).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import math
import time
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .camera_motion import apply_to_point, estimate_camera_motion, scale_of
from .confidence import cell_scores, ConfidenceEstimator, Cues, peak_to_sidelobe
from .config import TrackerConfig, validated
from .crop import context_size, crop_window, to_blob
from .decode import Candidates, make_decoder, select_candidate, Selection
from .distractors import DistractorMemory
from .longterm import LongTermState
from .manifest import ModelSpec
from .motion import ConstantVelocityKalman
from .template_update import cosine, TemplateUpdater
from .types import BBox, TrackResult, TrackState

# Shifts (fractions of the box) of the first-frame crops the appearance cue is calibrated on.
_APPEARANCE_SHIFTS = ((0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1))
# Fields whose change needs a new template (crop geometry); the others apply on the next frame.
_GEOMETRY_FIELDS = ('exemplar_size', 'instance_size', 'context_amount')
# Camera-motion compensation: the target's own motion (what the camera does not explain) is
# measured over this many frame pairs before the loss and kept, damped per frame, while lost.
_OWN_MOTION_PAIRS = 3
_OWN_MOTION_DAMPING = 0.9
# Motion plausibility scores the peak against a constant-velocity prediction: the velocity is
# a moving average (this rate) of the moves onto frames tracked with re-acquisition
# confidence, so a fast mover is not doubted for moving and a slip does not set the velocity.
_VELOCITY_RATE = 0.7
# A verified match beyond the re-acquisition reach is taken for a look-alike unless it
# resembles the initial template by this much more than what was last re-acquired (a wrong
# re-acquisition must not hide the real target behind the reach).
_CLEARLY_BETTER = 0.1


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is an HxWx3 uint8 array (BGR)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, 'shape', None)
        raise ValueError(f'expected an HxWx3 BGR image, got shape {shape}')
    if image.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {image.dtype}')


@dataclass(frozen=True)
class _Search:
    """One search-branch run: where, at what scale, and the decoded candidates."""

    center: Tuple[float, float]
    scale_z: float
    cands: Candidates


@dataclass(frozen=True)
class _Scored:
    """A chosen candidate of one search window, in image pixels, with its confidence."""

    center: Tuple[float, float]
    size: Tuple[float, float]
    pick: Selection
    cues: Cues
    confidence: float


class SiameseTracker:
    """Single-object Siamese tracker over any backend (see backends.base.Backend)."""

    def __init__(self, spec: ModelSpec, backend, config: Optional[TrackerConfig] = None):
        self.spec = spec
        self.backend = backend
        self._config = validated(config if config is not None else spec.tracker)
        self._decoder = make_decoder(spec)
        self._runnable_sizes = {(spec.tracker.exemplar_size, spec.tracker.instance_size)}
        self.check_crop_sizes(self._config)
        self.state = TrackState.IDLE
        self.features: Tuple[np.ndarray, ...] = ()
        self.center = np.zeros(2)
        self.size = np.zeros(2)
        self.pad_color = (0.0, 0.0, 0.0)
        self.last_result: Optional[TrackResult] = None
        self.last_stage_ms: Dict[str, float] = {}
        self.frame_index = 0
        self.updater = TemplateUpdater(self._config)
        self.estimator = ConfidenceEstimator(self._config)
        self.distractors = DistractorMemory(self._config)
        self.kalman = ConstantVelocityKalman()
        self.longterm = LongTermState()
        self._calibrated = False
        self._appearance_ref = 1.0
        self._previous: Optional[np.ndarray] = None
        self._tracked: deque = deque(maxlen=_OWN_MOTION_PAIRS + 1)  # (frame, centre)
        self._own_motion: Optional[np.ndarray] = None
        self.velocity = np.zeros(2)   # pixels per frame, for the motion-plausibility cue

    @property
    def config(self) -> TrackerConfig:
        """Return the configuration in force."""
        return self._config

    def set_config(self, config: TrackerConfig) -> None:
        """
        Change the configuration; crop-geometry changes are refused while a target is set.

        Crop sizes the backend's graphs cannot run are refused too (ValueError naming the
        sizes the model was built for).
        """
        config = validated(config)
        if self.state != TrackState.IDLE:
            changed = [f for f in _GEOMETRY_FIELDS
                       if getattr(config, f) != getattr(self._config, f)]
            if changed:
                raise ValueError(f'{", ".join(changed)} cannot change while tracking; '
                                 'stop, change, then set the target again')
        self.check_crop_sizes(config)
        self._config = config
        for policy in (self.updater, self.estimator, self.distractors):
            policy.set_config(config)
        if self.state != TrackState.IDLE and not self.updater.enabled and self.updater.changed:
            self.updater.reset(self.updater.initial)
            self.features = self.updater.current

    def check_crop_sizes(self, config: TrackerConfig) -> None:
        """
        Raise ValueError unless the backend runs ``config``'s crop sizes end to end.

        One template encoding, one search pass and one decode on blank crops, done once per
        pair of sizes (exported graphs have static shapes; dynamic ones accept more).
        """
        sizes = (config.exemplar_size, config.instance_size)
        if sizes in self._runnable_sizes:
            return
        z, x = sizes
        try:
            features = self.backend.encode_template(np.zeros((1, 3, z, z), np.float32))
            self._decoder.decode(*self.backend.track(features,
                                                     np.zeros((1, 3, x, x), np.float32)))
        except Exception as exc:  # noqa: BLE001 - any runtime's shape error means 'refused'
            built = self.spec.tracker
            raise ValueError(
                f'model {self.spec.name} cannot run exemplar_size={z}, instance_size={x}: '
                f'its graphs were built for exemplar_size={built.exemplar_size}, '
                f'instance_size={built.instance_size} ({type(exc).__name__}: '
                f'{str(exc).splitlines()[0][:160] if str(exc) else ""})') from exc
        self._runnable_sizes.add(sizes)

    # -- geometry helpers ----------------------------------------------------------------

    def template_crop(self, image: np.ndarray, center, size) -> np.ndarray:
        """Cut the template window of a target at ``center`` with ``size`` (what init encodes)."""
        s_z = round(context_size(size[0], size[1], self._config.context_amount))
        return crop_window(image, center, max(int(s_z), 1), self._config.exemplar_size,
                           self.pad_color)

    def _search_window(self) -> Tuple[float, float]:
        """(scale_z, s_x) for the current target size."""
        cfg = self._config
        s_z = context_size(self.size[0], self.size[1], cfg.context_amount)
        return cfg.exemplar_size / s_z, s_z * (cfg.instance_size / cfg.exemplar_size)

    def _run(self, image: np.ndarray, center, features) -> _Search:
        cfg = self._config
        scale_z, s_x = self._search_window()
        crop = crop_window(image, center, max(int(round(s_x)), 1), cfg.instance_size,
                           self.pad_color)
        cls, reg = self.backend.track(features, to_blob(crop))
        return _Search((float(center[0]), float(center[1])), scale_z,
                       self._decoder.decode(cls, reg))

    def _target_radius_cells(self, scale_z: float) -> int:
        side = math.sqrt(self.size[0] * self.size[1]) * scale_z / self.spec.stride
        return max(1, int(round(0.5 * side)))

    def _positions(self, search: _Search) -> Tuple[np.ndarray, np.ndarray]:
        boxes = search.cands.boxes
        return (search.center[0] + boxes[0] / search.scale_z,
                search.center[1] + boxes[1] / search.scale_z)

    def _penalised(self, search: _Search, expected=None) -> Tuple[_Search, np.ndarray]:
        """
        Candidates with their scores multiplied by the distractor factor (and the factor).

        With ``expected`` (while tracking) candidates within one target size of where the
        target is expected are left alone: the target may pass by a remembered distractor.
        """
        if not (self._config.distractor_enabled and self.distractors.items):
            return search, np.ones_like(search.cands.scores)
        xs, ys = self._positions(search)
        side = self._target_side()
        factor = self.distractors.factor(xs, ys, side, self.frame_index)
        if expected is not None:
            near = (xs - expected[0]) ** 2 + (ys - expected[1]) ** 2 < side ** 2
            factor = np.where(near, 1.0, factor)
        c = search.cands
        return _Search(search.center, search.scale_z,
                       Candidates(c.scores * factor, c.boxes, c.window)), factor

    def _target_side(self) -> float:
        return float(math.sqrt(max(self.size[0] * self.size[1], 1.0)))

    def _cues(self, search: _Search, raw_scores: np.ndarray, index: int,
              expected: Tuple[float, float]) -> Cues:
        side = self._map_side(search)
        score_map = cell_scores(raw_scores, side)
        cell = index % (side * side)
        sharp = peak_to_sidelobe(score_map, cell // side, cell % side,
                                 self._target_radius_cells(search.scale_z))
        xs, ys = self._positions(search)
        jump = math.hypot(xs[index] - expected[0], ys[index] - expected[1]) / self._target_side()
        return Cues(float(raw_scores[index]), sharp, jump)

    def _map_side(self, search: _Search) -> int:
        count = self.spec.anchors.count if self.spec.decoder == 'anchor' else 1
        return int(round(math.sqrt(search.cands.window.size // count)))

    # -- public API ----------------------------------------------------------------------

    def init(self, image: np.ndarray, box: BBox) -> TrackResult:
        """Take the target in ``box`` (x, y, w, h, 0-based pixels) of a BGR frame."""
        check_image(image)
        height, width = image.shape[:2]
        problem = box.validation_error(width, height)
        if problem:
            raise ValueError(problem)
        self.center = np.array([box.x + (box.w - 1) / 2.0, box.y + (box.h - 1) / 2.0])
        self.size = np.array([box.w, box.h], dtype=np.float64)
        # Upstream stores the channel mean in a uint8 frame, which truncates it.
        self.pad_color = tuple(float(np.floor(c)) for c in cv2.mean(image)[:3])
        crop = self.template_crop(image, self.center, self.size)
        self.features = tuple(self.backend.encode_template(to_blob(crop)))
        self.updater.reset(self.features)
        self.distractors.clear()
        self.kalman.reset(self.center, self.size)
        self.velocity = np.zeros(2)
        self.longterm.start(box)
        self.frame_index = 0
        self._calibrated = False
        if self._config.lt_enabled:
            self._calibrate(image)
        self.state = TrackState.TRACKING
        self._previous = image
        self._tracked.clear()
        self._tracked.append((image, self.center.copy()))
        self._own_motion = None
        self.last_result = TrackResult(box, 1.0, TrackState.TRACKING, 1.0)
        return self.last_result

    def _calibrate(self, image: np.ndarray) -> None:
        """Score the first frame itself: the reference the confidence is relative to."""
        cfg = self._config
        search = self._run(image, self.center, self.features)
        scale_z = search.scale_z
        pick = select_candidate(search.cands, self.size[0] * scale_z, self.size[1] * scale_z,
                                cfg.penalty_k, cfg.window_influence)
        self.estimator.calibrate(self._cues(search, search.cands.scores, pick.index,
                                            search.center))
        if cfg.conf_appearance_interval:
            sims = [cosine(self.updater.initial, self._encode_at(
                image, self.center + np.array(d) * self.size, self.size))
                for d in _APPEARANCE_SHIFTS]
            self._appearance_ref = max(float(np.mean(sims)), 1e-3)
        self._calibrated = True

    def _encode_at(self, image: np.ndarray, center, size):
        crop = self.template_crop(image, np.asarray(center, dtype=np.float64),
                                  np.asarray(size, dtype=np.float64))
        return self.backend.encode_template(to_blob(crop))

    def _appearance(self, image: np.ndarray, center, size) -> float:
        """
        Return the box's template-feature similarity to the initial template.

        Relative to the first frame; costs one template-branch run.
        """
        sample = self._encode_at(image, center, size)
        return cosine(self.updater.initial, sample) / self._appearance_ref

    def update(self, image: np.ndarray) -> TrackResult:
        """Track the target into the next frame."""
        if self.state == TrackState.IDLE:
            raise RuntimeError('no target: call init(image, box) first')
        check_image(image)
        cfg = self._config
        self.frame_index += 1
        t0 = time.perf_counter()
        lost = self.longterm.low_frames or self.longterm.state == TrackState.SEARCHING
        if cfg.lt_enabled and cfg.motion_camera and lost and self._previous is not None:
            self._follow_camera(self._previous, image)
        self._previous = image
        if cfg.lt_enabled and self.longterm.state == TrackState.SEARCHING:
            result = self._search(image)
        else:
            result = self._track(image, t0)
        self.state = result.state
        self.longterm.state = result.state
        if result.state == TrackState.TRACKING and cfg.motion_camera:
            if lost:                     # re-acquired: the history restarts here
                self._tracked.clear()
            self._tracked.append((image, self.center.copy()))
            self._own_motion = None
        t3 = time.perf_counter()
        self.last_stage_ms['step'] = (t3 - t0) * 1e3
        self.last_result = result
        return result

    def _follow_camera(self, previous: np.ndarray, image: np.ndarray) -> None:
        """
        Move the lost target's remembered place with the camera.

        The target's own motion measured before the loss is added (damped): a camera that was
        following the target keeps it in place, a pan away carries it out of the view and back.
        """
        if self._own_motion is None:
            self._own_motion = self._motion_before_loss()
        matrix = estimate_camera_motion(previous, image)
        if matrix is None:
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        zoom = scale_of(matrix)
        dx, dy = self._own_motion
        self._own_motion = self._own_motion * _OWN_MOTION_DAMPING

        def move(x: float, y: float) -> Tuple[float, float]:
            mx, my = apply_to_point(matrix, x, y)
            return mx + dx, my + dy

        self.center = np.array(move(self.center[0], self.center[1]))
        self.size = self.size * zoom
        held = self.longterm.held_box
        if held is not None:
            cx, cy = move(held.cx, held.cy)
            self.longterm.held_box = BBox.from_center(cx, cy, held.w * zoom, held.h * zoom)
        kx, ky = move(self.kalman.x[0], self.kalman.x[1])
        self.kalman.x[:4] = (kx, ky, self.kalman.x[2] * zoom, self.kalman.x[3] * zoom)
        self.kalman.x[4:6] = 0.0        # the motion is accounted for here
        # Remembered distractors stay where they were in the image: look-alikes are mostly
        # movers themselves (people, cars), often kept in view by the same camera.

    def _motion_before_loss(self) -> np.ndarray:
        """
        Return the target's mean per-frame motion that the camera motion does not explain.

        Measured over the last confidently tracked frames (zero when they are too few).
        """
        tracked = list(self._tracked)
        steps = []
        for (a, ca), (b, cb) in zip(tracked, tracked[1:]):
            matrix = estimate_camera_motion(a, b)
            if matrix is not None:
                steps.append(np.asarray(cb) - np.array(apply_to_point(matrix, ca[0], ca[1])))
        return np.mean(steps, axis=0) if steps else np.zeros(2)

    def _track(self, image: np.ndarray, t0: float) -> TrackResult:
        """Run the plain tracking step, with the policies that are switched on."""
        cfg = self._config
        if cfg.motion_kalman:
            self.kalman.predict()
        center = self.center
        if cfg.motion_kalman and self.longterm.low_frames:
            center = np.array(self.kalman.center)
        scale_z, s_x = self._search_window()
        crop = crop_window(image, center, max(int(round(s_x)), 1), cfg.instance_size,
                           self.pad_color)
        blob = to_blob(crop)
        t1 = time.perf_counter()
        cls, reg = self.backend.track(self.features, blob)
        t2 = time.perf_counter()
        cands = self._decoder.decode(cls, reg)
        search = _Search((float(center[0]), float(center[1])), scale_z, cands)
        raw_scores = cands.scores
        expected = self.kalman.center if cfg.motion_kalman else (
            center[0] + self.velocity[0], center[1] + self.velocity[1])
        search, factor = self._penalised(search, expected)
        cands = search.cands
        pick = select_candidate(cands, self.size[0] * scale_z, self.size[1] * scale_z,
                                cfg.penalty_k, cfg.window_influence)
        dx, dy, bw, bh = cands.boxes[:, pick.index] / scale_z
        lr = pick.penalty * pick.score * cfg.lr
        cx = center[0] + dx
        cy = center[1] + dy
        w = self.size[0] * (1 - lr) + bw * lr
        h = self.size[1] * (1 - lr) + bh * lr
        height, width = image.shape[:2]
        cx = min(max(cx, 0.0), width)
        cy = min(max(cy, 0.0), height)
        w = min(max(w, cfg.min_size), width)
        h = min(max(h, cfg.min_size), height)
        self.last_stage_ms = {'crop': (t1 - t0) * 1e3, 'network': (t2 - t1) * 1e3}
        if not cfg.lt_enabled:
            self.center = np.array([cx, cy])
            self.size = np.array([w, h])
            if cfg.motion_kalman:
                self.kalman.correct(self.center, self.size)
            state = TrackState.TRACKING if pick.score >= cfg.found_threshold else TrackState.LOST
            box = BBox.from_center(cx, cy, w, h)
            if state == TrackState.TRACKING:
                self._after_confident(image, search, raw_scores, pick, pick.score)
            self.last_stage_ms['decode'] = (time.perf_counter() - t2) * 1e3
            return TrackResult(box, pick.score, state, pick.score)

        if not self._calibrated:
            self._calibrate(image)
        cues = self._cues(search, raw_scores, pick.index, expected)
        confidence = self.estimator(cues, float(factor[pick.index]))
        lt = self.longterm
        every = cfg.conf_appearance_interval
        if every and (lt.low_frames or self.frame_index % every == 0
                      or confidence < cfg.update_min_confidence):
            t_a = time.perf_counter()
            appearance = self._appearance(image, (cx, cy), (w, h))
            self.last_stage_ms['verify'] = (time.perf_counter() - t_a) * 1e3
            cues = Cues(cues.score, cues.sharpness, cues.jump, appearance)
            confidence = self.estimator(cues, float(factor[pick.index]))
        if confidence >= cfg.found_threshold:
            lt.low_frames = 0
            found = np.array([cx, cy])
            if confidence >= cfg.lt_redetect_threshold:
                lt.sure_frame = self.frame_index
                self.velocity += _VELOCITY_RATE * (found - self.center - self.velocity)
            self.center = found
            self.size = np.array([w, h])
            if cfg.motion_kalman:
                self.kalman.correct(self.center, self.size)
            box = BBox.from_center(cx, cy, w, h)
            lt.held_box = box
            if confidence >= cfg.update_min_confidence:
                self.estimator.observe(cues)
            self._after_confident(image, search, raw_scores, pick, confidence, crop)
            state = TrackState.TRACKING
        else:
            lt.low_frames += 1
            if cfg.motion_kalman:
                self.center = np.array(self.kalman.center)
            box = lt.held_box
            state = TrackState.LOST
            if lt.low_frames >= cfg.lt_lost_frames:
                state = TrackState.SEARCHING
                origin = self.kalman.center if cfg.motion_kalman else (
                    lt.held_box.cx, lt.held_box.cy)
                lt.plan_search(width, height, self._search_window()[1], origin)
        self.last_stage_ms['decode'] = (time.perf_counter() - t2) * 1e3
        return TrackResult(box, pick.score, state, confidence)

    def _probe_distractor(self, search: _Search, crop: np.ndarray):
        """
        Return where the tracker would go if the target vanished.

        The search crop is run again with the target masked out; a strong peak there is a
        distractor (image x, y).
        """
        cfg = self._config
        masked = crop.copy()
        z = search.scale_z
        half = 0.6 * self.size * z
        mid = cfg.instance_size / 2.0 + (self.center - np.array(search.center)) * z
        x1, y1 = (int(v) for v in np.floor(mid - half))
        x2, y2 = (int(v) for v in np.ceil(mid + half))
        masked[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = np.array(self.pad_color)
        cls, reg = self.backend.track(self.features, to_blob(masked))
        probe = _Search(search.center, z, self._decoder.decode(cls, reg))
        pick = select_candidate(probe.cands, self.size[0] * z, self.size[1] * z,
                                cfg.penalty_k, 0.0)
        xs, ys = self._positions(probe)
        found = float(xs[pick.index]), float(ys[pick.index])
        if cfg.conf_appearance_interval:
            # A look-alike is what matches the initial template as well as the target does.
            if pick.score < cfg.distractor_ratio * float(search.cands.scores.max()):
                return None
            size = probe.cands.boxes[2:, pick.index] / z
            if self._appearance(self._probe_image, found, size) < cfg.lt_verify_ratio:
                return None
            return found
        cues = self._cues(probe, probe.cands.scores, pick.index, search.center)
        if self.estimator(Cues(cues.score, cues.sharpness, 0.0)) < cfg.distractor_ratio:
            return None
        return found

    def _after_confident(self, image, search: _Search, raw_scores, pick: Selection,
                         confidence: float, crop: Optional[np.ndarray] = None) -> None:
        """Distractor bookkeeping and the template update on a confidently tracked frame."""
        cfg = self._config
        distractor_free = True
        if cfg.distractor_enabled and confidence >= cfg.update_min_confidence:
            side = self._map_side(search)
            score_map = cell_scores(raw_scores, side)
            best = raw_scores.reshape(-1, side * side).argmax(axis=0)
            cell = pick.index % (side * side)
            peaks = self.distractors.secondary_peaks(
                score_map, cell // side, cell % side, self._target_radius_cells(search.scale_z),
                cfg.distractor_ratio)
            xs, ys = self._positions(search)
            points = []
            for r, c in peaks:
                k = int(best[r * side + c]) * side * side + r * side + c
                points.append((float(xs[k]), float(ys[k])))
            if (crop is not None and cfg.distractor_probe_interval
                    and self.frame_index % cfg.distractor_probe_interval == 0):
                self._probe_image = image
                found = self._probe_distractor(search, crop)
                if found is not None:
                    points.append(found)
            distractor_free = not points
            self.distractors.observe(points, (self.center[0], self.center[1]),
                                     self._target_side(), self.frame_index)
        if self.updater.due(self.frame_index, confidence, distractor_free):
            crop = self.template_crop(image, self.center, self.size)
            sample = self.backend.encode_template(to_blob(crop))
            if self.updater.offer(sample):
                self.features = self.updater.current

    def _best_in(self, image: np.ndarray, center, features, expected,
                 verify: bool = True) -> _Scored:
        """Run one search window and score its best candidate (no cosine window)."""
        cfg = self._config
        search = self._run(image, center, features)
        raw = search.cands.scores
        search, factor = self._penalised(search)
        scale_z = search.scale_z
        pick = select_candidate(search.cands, self.size[0] * scale_z, self.size[1] * scale_z,
                                cfg.penalty_k, 0.0)
        cues = self._cues(search, raw, pick.index, expected)
        xs, ys = self._positions(search)
        bw, bh = search.cands.boxes[2:, pick.index] / scale_z
        found = (float(xs[pick.index]), float(ys[pick.index]))
        appearance = 1.0
        if verify and cfg.conf_appearance_interval:
            lr = pick.penalty * pick.score * cfg.lr
            size = self.size * (1 - lr) + np.array([bw, bh]) * lr
            appearance = self._appearance(image, found, size)
        cues = Cues(cues.score, cues.sharpness, 0.0, appearance)
        return _Scored(found, (float(bw), float(bh)),
                       pick, cues, self.estimator(cues, float(factor[pick.index])))

    def _search(self, image: np.ndarray) -> TrackResult:
        """One SEARCHING frame: the local window plus some global-scan windows."""
        cfg = self._config
        lt = self.longterm
        if cfg.motion_kalman:
            self.kalman.predict()
            expected = self.kalman.center
        else:
            expected = (lt.held_box.cx, lt.held_box.cy)
        centers = [expected] + lt.next_tiles(cfg.lt_tiles_per_frame, cfg.lt_local_frames)
        best: Optional[_Scored] = None
        # How far the target can have gone since it was last surely seen (target sizes;
        # frames tracked with a middling confidence may already have been on something
        # else): a match farther away was there while the target was not, so it is a
        # look-alike, not the target.
        reach = 1.0 + cfg.lt_reacquire_speed * (self.frame_index - lt.sure_frame)
        side = self._target_side()
        for c in centers:
            scored = self._best_in(image, c, self.features, expected)
            far = math.hypot(scored.center[0] - expected[0],
                             scored.center[1] - expected[1]) > reach * side
            if (far and cfg.lt_reacquire_speed > 0
                    and scored.confidence >= cfg.lt_redetect_threshold
                    and self._verified(image, scored)
                    and scored.cues.appearance < lt.appearance + _CLEARLY_BETTER):
                if cfg.distractor_enabled:
                    self.distractors.observe([scored.center], None, side, self.frame_index)
                continue
            if best is None or scored.confidence > best.confidence:
                best = scored
        if best is None:
            return TrackResult(lt.held_box, 0.0, TrackState.SEARCHING, 0.0)
        if best.confidence >= cfg.lt_redetect_threshold and self._verified(image, best):
            height, width = image.shape[:2]
            cx = min(max(best.center[0], 0.0), width)
            cy = min(max(best.center[1], 0.0), height)
            lr = best.pick.penalty * best.pick.score * cfg.lr
            w = min(max(self.size[0] * (1 - lr) + best.size[0] * lr, cfg.min_size), width)
            h = min(max(self.size[1] * (1 - lr) + best.size[1] * lr, cfg.min_size), height)
            self.center = np.array([cx, cy])
            self.size = np.array([w, h])
            self.kalman.reset(self.center, self.size)
            self.velocity = np.zeros(2)
            box = BBox.from_center(cx, cy, w, h)
            lt.start(box, self.frame_index, best.cues.appearance)
            return TrackResult(box, best.pick.score, TrackState.TRACKING, best.confidence)
        return TrackResult(lt.held_box, best.pick.score, TrackState.SEARCHING, best.confidence)

    def _verified(self, image: np.ndarray, cand: _Scored) -> bool:
        """Check that a re-acquired candidate also matches the initial template well enough."""
        if self._config.conf_appearance_interval:
            return cand.cues.appearance >= self._config.lt_verify_ratio
        ref = self.estimator.reference.score
        if not self.updater.changed:
            return cand.cues.score >= self._config.lt_verify_ratio * ref
        check = self._best_in(image, cand.center, self.updater.initial, cand.center, False)
        near = math.hypot(check.center[0] - cand.center[0],
                          check.center[1] - cand.center[1]) < 0.5 * self._target_side()
        return near and check.cues.score >= self._config.lt_verify_ratio * ref

    def stop(self) -> None:
        """Forget the target."""
        self.state = TrackState.IDLE
        self.longterm.state = TrackState.IDLE
        self.features = ()
        self.last_result = None
