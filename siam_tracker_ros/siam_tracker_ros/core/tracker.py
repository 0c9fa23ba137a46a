"""
The long-term tracker: the plain Siamese step, wrapped by the long-term controller.

``SiameseStep`` (core/siamese_step.py) is the authors' procedure and holds no target state.
``SiameseTracker`` owns the target (centre, size, template features) and composes policy
objects around the step, each configured by one group of TrackerConfig and each off in the
'plain' preset (which then reproduces the authors' boxes bit for bit):

* ``TemplateUpdater`` (update_*): gated moving-average template update, initial template kept
  (with a model whose backend runs a learned template-fusion graph: the same gated samples
  feed the fusion's memory, and the template is the fused one);
* ``ConfidenceEstimator`` (conf_*): P(IoU >= 0.5) of the chosen box from the peak score, its
  sharpness, motion plausibility, the distractor factor and (on some frames) the appearance
  of the box against the initial template; ``found_threshold`` is compared with it in every
  preset;
* ``LongTermState`` (lt_*): TRACKING / LOST / SEARCHING. With ``lt_enabled`` the published
  box is held only on evidence of loss (confidence below ``found_threshold``; a strong peak
  whose appearance agrees with the initial template is never evidence of loss); while LOST
  the next crop moves from the target's path towards the step's match as far as its
  confidence, and searching grows local-to-global around where the target was lost;
  re-detected matches must pass the appearance check and lie within one target size plus
  ``lt_reacquire_speed`` sizes per frame since the target was last tracked with
  re-acquisition confidence (farther ones become distractors, unless they resemble the
  initial template clearly better than the last re-acquired match did). Without it the box
  follows the plain step on every frame;
* ``DistractorMemory`` (distractor_*): penalise candidates on remembered look-alikes;
* ``ConstantVelocityKalman`` (motion_kalman): where to look through occlusions;
* camera motion (motion_camera): while the target is not tracked, the place it was last seen
  moves with the camera (sparse optical flow between consecutive frames);
* re-centring (motion_recenter): a box that moved far from the crop centre, within the
  plausible jump, is searched for once more from a crop centred on it (``_recentred``).

A temporal model (TAFA, ``backend.temporal`` > 0) also gets the features of the last frames'
main search crops, which the tracker keeps in ``history`` (cleared on a new target and on
every searching frame); re-detection windows and probes run without earlier frames.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
import math
import time
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from .camera_motion import apply_to_point, estimate_camera_motion, scale_of
from .confidence import cell_scores, ConfidenceEstimator, Cues, peak_to_sidelobe, sigmoid
from .config import TrackerConfig, validated
from .crop import pad_colour
from .decode import Selection
from .distractors import DistractorMemory
from .longterm import LongTermState
from .manifest import ModelSpec
from .motion import ConstantVelocityKalman
from .siamese_step import Search, SiameseStep
from .template_update import TemplateUpdater
from .types import BBox, TrackResult, TrackState

# Shifts (fractions of the box) of the first-frame crops the appearance cue is calibrated on.
_APPEARANCE_SHIFTS = ((0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1))
# Fields whose change needs a new template (crop geometry); the others apply on the next frame.
_GEOMETRY_FIELDS = ('exemplar_size', 'instance_size', 'context_amount')
# Camera-motion compensation: the target's own motion (what the camera does not explain) is
# measured over this many frame pairs before the loss and kept, damped per frame, while lost.
_OWN_MOTION_PAIRS = 3
_OWN_MOTION_DAMPING = 0.9
# The target's velocity (for the motion cue and the search reach) is a moving average (this
# rate) of the moves onto frames tracked with re-acquisition confidence, so a fast mover is
# not doubted for moving and a slip does not set the velocity.
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
class Candidate:
    """A chosen candidate of one search window, in image pixels, with its confidence."""

    center: Tuple[float, float]
    size: Tuple[float, float]
    pick: Selection
    cues: Cues
    confidence: float


@dataclass(frozen=True)
class StepPass:
    """One run of the plain step on a tracking crop: its candidates, choice and box."""

    search: Search           # candidates with their scores penalised (distractor memory)
    raw_scores: np.ndarray   # the scores before the penalty
    factor: np.ndarray       # the penalty factor of every candidate
    pick: Selection
    center: np.ndarray
    size: np.ndarray


@dataclass(frozen=True)
class CueRecord:
    """The cues of the box the controller judged on a frame (for fitting the confidence)."""

    box: BBox
    features: Dict[str, float]


class SiameseTracker:
    """Single-object Siamese tracker over any backend (see backends.base.Backend)."""

    def __init__(self, spec: ModelSpec, backend, config: Optional[TrackerConfig] = None):
        self.spec = spec
        self.backend = backend
        self._config = validated(config if config is not None else spec.tracker)
        self.step = SiameseStep(spec, backend, self._config.step)
        built = spec.tracker.step
        self._runnable_sizes = {(built.exemplar_size, built.instance_size)}
        self.check_crop_sizes(self._config)
        self.state = TrackState.IDLE
        self.features: Tuple[np.ndarray, ...] = ()
        self.center = np.zeros(2)
        self.size = np.zeros(2)
        self.last_result: Optional[TrackResult] = None
        self.last_stage_ms: Dict[str, float] = {}
        self.frame_index = 0
        fuse = backend.fuse_templates if getattr(backend, 'has_fusion', False) else None
        self.updater = TemplateUpdater(self._config.update, fuse, spec.fusion_memory)
        self.estimator = ConfidenceEstimator(self._config.confidence)
        self.distractors = DistractorMemory(self._config.distractor)
        self.kalman = ConstantVelocityKalman()
        self.longterm = LongTermState()
        self._appearance_ref = 1.0
        self._box_sample: Optional[Tuple[np.ndarray, ...]] = None   # this frame's box features
        self._previous: Optional[np.ndarray] = None
        self._tracked: deque = deque(maxlen=_OWN_MOTION_PAIRS + 1)  # (frame, centre)
        self._own_motion: Optional[np.ndarray] = None
        self.velocity = np.zeros(2)   # pixels per frame
        # While lost: where the plain step has followed the target since (None: no trail).
        self.trail: Optional[np.ndarray] = None
        # A temporal model (TAFA): the last frames' features of the main search crop.
        self.temporal = self.step.temporal
        self.history: deque = deque(maxlen=max(self.temporal, 1))
        # Fitting the confidence (siam-eval --fit-confidence): measure the appearance cue on
        # every frame and keep the judged box's cues in ``last_cues``.
        self.record_cues = False
        self.last_cues: Optional[CueRecord] = None

    @property
    def config(self) -> TrackerConfig:
        """Return the configuration in force."""
        return self._config

    @property
    def pad_color(self) -> Tuple[float, float, float]:
        """Colour the crops are padded with (the first frame's channel means)."""
        return self.step.pad_color

    def set_config(self, config: TrackerConfig) -> None:
        """
        Change the configuration; crop-geometry changes are refused while a target is set.

        Crop sizes the backend's graphs cannot run are refused too (ValueError naming the
        sizes the model was built for).
        """
        config = validated(config)
        if self.state != TrackState.IDLE:
            changed = [f for f in _GEOMETRY_FIELDS
                       if getattr(config.step, f) != getattr(self._config.step, f)]
            if changed:
                raise ValueError(f'{", ".join(changed)} cannot change while tracking; '
                                 'stop, change, then set the target again')
        self.check_crop_sizes(config)
        self._config = config
        self.step.config = config.step
        self.updater.set_config(config.update)
        self.estimator.set_config(config.confidence)
        self.distractors.set_config(config.distractor)
        if not config.longterm.trail:
            self.trail = None
        if self.state != TrackState.IDLE and not self.updater.enabled and self.updater.changed:
            self.updater.reset(self.updater.initial)
            self.features = self.updater.current
        elif self.state != TrackState.IDLE and self.updater.fuse is not None:
            self.features = self.updater.current

    def check_crop_sizes(self, config: TrackerConfig) -> None:
        """
        Raise ValueError unless the backend runs ``config``'s crop sizes end to end.

        One template encoding, one search pass and one decode on blank crops, done once per
        pair of sizes (exported graphs have static shapes; dynamic ones accept more).
        """
        sizes = (config.step.exemplar_size, config.step.instance_size)
        if sizes in self._runnable_sizes:
            return
        z, x = sizes
        try:
            self.step.check_sizes(z, x)
        except Exception as exc:  # noqa: BLE001 - any runtime's shape error means 'refused'
            built = self.spec.tracker.step
            raise ValueError(
                f'model {self.spec.name} cannot run exemplar_size={z}, instance_size={x}: '
                f'its graphs were built for exemplar_size={built.exemplar_size}, '
                f'instance_size={built.instance_size} ({type(exc).__name__}: '
                f'{str(exc).splitlines()[0][:160] if str(exc) else ""})') from exc
        self._runnable_sizes.add(sizes)

    def template_crop(self, image: np.ndarray, center, size) -> np.ndarray:
        """Cut the template window of a target at ``center`` with ``size`` (what init encodes)."""
        return self.step.template_crop(image, center, size)

    # -- cues ----------------------------------------------------------------------------

    def _target_side(self) -> float:
        return float(math.sqrt(max(self.size[0] * self.size[1], 1.0)))

    def _allowance(self) -> float:
        """Return the plausible jump in pixels: a part of the target size plus its speed."""
        return (self._config.confidence.motion_allowance * self._target_side()
                + float(np.hypot(*self.velocity)))

    def _penalised(self, search: Search, expected=None) -> Tuple[Search, np.ndarray]:
        """
        Candidates with their scores multiplied by the distractor factor (and the factor).

        With ``expected`` (while tracking) candidates within the plausible jump (``_allowance``)
        of where the target is expected are left alone: the target may pass by a remembered
        distractor. A look-alike beside the target, farther than that, stays penalised.
        """
        if not (self._config.distractor.enabled and self.distractors.items):
            return search, np.ones_like(search.cands.scores)
        xs, ys = search.positions()
        side = self._target_side()
        factor = self.distractors.factor(xs, ys, side, self.frame_index)
        if expected is not None:
            reach = self._allowance()
            near = (xs - expected[0]) ** 2 + (ys - expected[1]) ** 2 < reach ** 2
            factor = np.where(near, 1.0, factor)
        return search.with_scores(search.cands.scores * factor), factor

    def _cues(self, search: Search, raw_scores: np.ndarray, index: int, expected,
              factor: float = 1.0, size=None) -> Cues:
        side = self.step.map_side(search)
        score_map = cell_scores(raw_scores, side)
        cell = index % (side * side)
        size = self.size if size is None else size
        sharp = peak_to_sidelobe(score_map, cell // side, cell % side,
                                 self.step.target_radius_cells(size, search.scale_z))
        xs, ys = search.positions()
        jump = math.hypot(xs[index] - expected[0], ys[index] - expected[1])
        # The score from the head's logit margin in float64: the float32 score of a confident
        # head is 1.0, its logit spread is the confidence's strongest cue.
        score = float(sigmoid(search.cands.margins[index]))
        return Cues(score, sharp, jump, self._allowance(), float(factor))

    def _camera_jump(self, image: np.ndarray, search: Search, index: int, cues: Cues) -> Cues:
        """
        Return the cues with camera motion taken out of the jump (only for a large jump).

        The jump is the smaller of the one from the velocity prediction and the one from the
        same prediction carried by the camera motion between the last frame and this one.
        """
        previous = self._previous
        if previous is None or cues.jump <= cues.allowance:
            return cues
        matrix = estimate_camera_motion(previous, image)
        if matrix is None:
            return cues
        mx, my = apply_to_point(matrix, self.center[0], self.center[1])
        xs, ys = search.positions()
        jump = math.hypot(xs[index] - mx - self.velocity[0], ys[index] - my - self.velocity[1])
        return replace(cues, jump=jump) if jump < cues.jump else cues

    def _appearance(self, image: np.ndarray, center, size, keep: bool = False) -> float:
        """
        Return the box's template-feature similarity to the initial template.

        Relative to the first frame; costs one template-branch run. ``keep`` keeps the box's
        features for this frame's template update (the same crop).
        """
        sample = self.step.encode(image, center, size)
        if keep:
            self._box_sample = sample
        return self.updater.similarity(sample) / self._appearance_ref

    def _strong(self, cues: Cues) -> bool:
        """
        Tell whether the cues are no evidence of loss.

        A strong peak, on no remembered look-alike, whose appearance agrees with what the
        target looked like lately.
        """
        cfg = self._config.confidence
        if cues.appearance is None:
            return False
        features = self.estimator.features(cues)
        return (self._strong_peak(cues)
                and cues.appearance >= cfg.strong_appearance
                and features['appearance_change'] >= -cfg.strong_change)

    def _strong_peak(self, cues: Cues) -> bool:
        """Whether the peak (times its distractor factor) is strong against the first frame's."""
        return (cues.score * cues.distractor
                >= self._config.confidence.strong_score * self.estimator.reference.score)

    def _returns(self, cues: Cues, confidence: float) -> bool:
        """
        Whether a box found after a loss is the target coming back (not what took its place).

        Sure enough for re-acquisition, or found and looking like the target did lately.
        """
        lt = self._config.longterm
        if confidence >= lt.redetect_threshold and (
                cues.appearance is None or cues.appearance >= lt.verify_ratio):
            return True
        return (cues.appearance is not None and cues.appearance
                >= self.estimator.recent_appearance - lt.return_margin)

    def _record(self, center, size, cues: Cues) -> None:
        if self.record_cues:
            self.last_cues = CueRecord(BBox.from_center(center[0], center[1], size[0], size[1]),
                                       self.estimator.features(cues))

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
        self.step.pad_color = pad_colour(image)
        self.features = self.step.encode(image, self.center, self.size)
        self.updater.reset(self.features)
        if self.updater.fusing:
            self.features = self.updater.current
        self.history.clear()
        self.distractors.clear()
        self.kalman.reset(self.center, self.size)
        self.velocity = np.zeros(2)
        self.trail = None
        self.longterm.start(box)
        self.frame_index = 0
        self.last_stage_ms = {}
        self._calibrate(image)
        self.state = TrackState.TRACKING
        self._previous = image
        self._tracked.clear()
        self._tracked.append((image, self.center.copy()))
        self._own_motion = None
        self.last_cues = None
        self.last_result = TrackResult(box, 1.0, TrackState.TRACKING, 1.0)
        return self.last_result

    def _calibrate(self, image: np.ndarray) -> None:
        """Score the first frame itself: the reference of sharpness, strong peaks, appearance."""
        search = self._main_search(image, self.center, self._previous_features())
        pick = self.step.choose(search, self.size)
        self.estimator.calibrate(self._cues(search, search.cands.scores, pick.index,
                                            search.center))
        self._appearance_ref = 1.0
        if self._config.confidence.appearance != 'off':
            sims = [self.updater.similarity(self.step.encode(
                image, self.center + np.array(d) * self.size, self.size))
                for d in _APPEARANCE_SHIFTS]
            self._appearance_ref = max(float(np.mean(sims)), 1e-3)

    def update(self, image: np.ndarray) -> TrackResult:
        """Track the target into the next frame."""
        if self.state == TrackState.IDLE:
            raise RuntimeError('no target: call init(image, box) first')
        check_image(image)
        cfg = self._config
        self.frame_index += 1
        self._box_sample = None
        t0 = time.perf_counter()
        # This frame's stages, summed over every window it runs (crop, network, decode).
        self.last_stage_ms = {'crop': 0.0, 'network': 0.0, 'decode': 0.0}
        lost = cfg.longterm.enabled and self.longterm.lost
        if cfg.motion.camera and lost and self._previous is not None:
            self._follow_camera(self._previous, image)
        if lost and self.longterm.state == TrackState.SEARCHING:
            result = self._search(image)
        else:
            result = self._trail_reacquires(image) if lost else None
            if result is None:
                result = self._track(image)
        self._previous = image
        self.state = result.state
        if result.state == TrackState.TRACKING and cfg.motion.camera:
            if lost:                     # re-acquired: the history restarts here
                self._tracked.clear()
            self._tracked.append((image, self.center.copy()))
            self._own_motion = None
        self.last_stage_ms['step'] = (time.perf_counter() - t0) * 1e3
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

    def _judge(self, image: np.ndarray, search: Search, pick: Selection, cues: Cues,
               center, size) -> Tuple[Cues, float]:
        """
        Return the cues and confidence of the step's box, the appearance where it is due.

        The appearance is measured on every frame that is not certain (its confidence without
        the appearance below conf_appearance_certain), while the appearance does not hold
        still (a turning target: the level must follow it, the strong rule and the return
        tests compare with it), on every frame that follows a loss or may update the template
        (no unverified box becomes a template sample), every conf_appearance_interval frames,
        and when fitting.
        """
        cfg = self._config
        confidence = self.estimator(cues)
        if cfg.longterm.enabled and confidence < cfg.update.min_confidence:
            cues = self._camera_jump(image, search, pick.index, cues)
            confidence = self.estimator(cues)
        due = cfg.confidence.appearance != 'off' and (
            confidence < cfg.confidence.appearance_certain or self.longterm.lost
            or not self.estimator.appearance_settled
            or self.updater.sampling(self.frame_index)
            or self.frame_index % cfg.confidence.appearance_interval == 0)
        if due or self.record_cues:
            t_a = time.perf_counter()
            measured = replace(cues, appearance=self._appearance(image, center, size, keep=True))
            self._clock('verify', t_a)
            self._record(center, size, measured)
            if due:
                cues = measured
                confidence = self.estimator(cues)
        if confidence < cfg.confidence.found_threshold and self._strong(cues):
            confidence = cfg.confidence.found_threshold
        return cues, confidence

    def _clock(self, stage: str, since: float, nested_from: Optional[float] = None) -> float:
        """
        Add the time since ``since`` to this frame's ``stage`` (ms); return the time now.

        ``nested_from`` (``_windows_ms()`` at ``since``): leave out the crop and network time
        counted in between (a probe's network run inside the decode stage).
        """
        now = time.perf_counter()
        nested = 0.0 if nested_from is None else self._windows_ms() - nested_from
        self.last_stage_ms[stage] = (self.last_stage_ms.get(stage, 0.0)
                                     + (now - since) * 1e3 - nested)
        return now

    def _windows_ms(self) -> float:
        """Crop and network time of this frame so far (ms)."""
        return self.last_stage_ms['crop'] + self.last_stage_ms['network']

    def _track(self, image: np.ndarray) -> TrackResult:
        """Run the plain step, judge its box, and follow it or hold the published box."""
        cfg = self._config
        if cfg.motion.kalman:
            self.kalman.predict()
        center = self.center
        if cfg.motion.kalman and self.longterm.low_frames:
            center = np.array(self.kalman.center)
        previous = self._previous_features()
        search = self._main_search(image, center, previous)
        t = time.perf_counter()
        windows_ms = self._windows_ms()
        if cfg.motion.kalman:
            expected = self.kalman.center
        elif cfg.longterm.enabled and self.longterm.lost:
            # While lost the crop follows the step's best match, but the target is expected
            # on its own path from the held box: where the step went (maybe a look-alike) is
            # not where the target is expected (look-alike penalties, motion cue).
            expected = self._on_path()
        else:
            expected = (center[0] + self.velocity[0], center[1] + self.velocity[1])
        step = self._choose(search, expected, image.shape)
        step = self._recentred(image, center, step, expected, previous) or step
        search, pick, box_center, box_size = step.search, step.pick, step.center, step.size
        cues = self._cues(search, step.raw_scores, pick.index, expected,
                          step.factor[pick.index])
        cues, confidence = self._judge(image, search, pick, cues, box_center, box_size)
        found = confidence >= cfg.confidence.found_threshold
        returning = cfg.longterm.enabled and self.longterm.lost
        if found and returning and not self._returns(cues, confidence):
            found = False
            confidence = self._below_found(confidence)
        box = BBox.from_center(box_center[0], box_center[1], box_size[0], box_size[1])
        if not cfg.longterm.enabled:
            # The plain step: the box follows the step on every frame; the state says whether
            # the confidence calls it found.
            self._follow(box_center, box_size, confidence)
            self.longterm.step(True, box, cfg.longterm.lost_frames)
            if found:
                self._after_confident(image, search, step.raw_scores, pick, confidence, cues)
            self._clock('decode', t, windows_ms)
            return TrackResult(box, pick.score, TrackState.TRACKING if found else TrackState.LOST,
                               confidence)
        lt = self.longterm
        state = lt.step(found, box, cfg.longterm.lost_frames)
        if found:
            self._follow(box_center, box_size, confidence)
            self._after_confident(image, search, step.raw_scores, pick, confidence, cues)
        else:
            if cfg.motion.kalman:
                self.center = np.array(self.kalman.center)
            elif state == TrackState.LOST:
                # The next crop goes where the target most likely is: from its own path
                # towards the step's match, as far as the confidence in that match.
                path = np.array(expected, dtype=np.float64)
                self.center = path + confidence * (np.asarray(box_center) - path)
            if not returning:
                self._start_trail(box_center, cues)
            box = lt.held_box
            if state == TrackState.SEARCHING:
                height, width = image.shape[:2]
                origin = self.kalman.center if cfg.motion.kalman else (box.cx, box.cy)
                lt.plan_search(width, height, self.step.search_window(self.size)[1], origin)
        self._clock('decode', t, windows_ms)
        return TrackResult(box, pick.score, state, confidence)

    def _run_window(self, image: np.ndarray, center, size, features,
                    previous: Optional[Tuple] = None) -> Search:
        """Cut the search window around ``center`` for a target of ``size``; run it (clocked)."""
        t = time.perf_counter()
        crop, scale_z = self.step.search_crop(image, center, size)
        t = self._clock('crop', t)
        search = self.step.run_crop(crop, center, scale_z, features, previous)
        self._clock('network', t)
        return search

    def _previous_features(self) -> Optional[Tuple]:
        """Return the last frames' tracking-crop features for a temporal model; else None."""
        return tuple(self.history) if self.temporal else None

    def _main_search(self, image: np.ndarray, center, previous: Optional[Tuple]) -> Search:
        """
        Run the frame's tracking crop around ``center`` (not a re-detection window or probe).

        A temporal model gets ``previous`` (``_previous_features``), the last frames' features
        of this crop, and keeps this frame's; every other run of it is one with no earlier frame
        (the backend's plain ``track``).
        """
        search = self._run_window(image, center, self.size, self.features, previous)
        if self.temporal:
            self.history.append(search.xf)
        return search

    def _choose(self, search: Search, expected, image_shape) -> StepPass:
        """Penalise the candidates on remembered look-alikes, choose one and place its box."""
        raw_scores = search.cands.scores
        search, factor = self._penalised(search, expected)
        pick = self.step.choose(search, self.size)
        center, size = self.step.box_of(search, pick, self.size, image_shape)
        return StepPass(search, raw_scores, factor, pick, center, size)

    def _recentred(self, image: np.ndarray, center, first: StepPass, expected,
                   previous: Optional[Tuple]) -> Optional[StepPass]:
        """
        Return the step run again from a crop centred on its box, where that is due; or None.

        A target that moved far from the crop centre is seen off-centre: the cosine window
        pulls the choice back towards the centre and the head, trained on targets near the
        centre, scores and sizes it worse. When the box moved more than ``motion_recenter``
        target sizes, within the plausible jump (a larger jump is judged as it is, not made
        more of), the step runs once more centred on the box. Its box is taken where it stays
        within half the first box's size of it: a refinement, not a second jump.
        """
        cfg = self._config
        if cfg.motion.recenter <= 0 or (cfg.longterm.enabled and self.longterm.lost):
            return None
        side = self._target_side()
        moved = math.hypot(first.center[0] - center[0], first.center[1] - center[1])
        jump = math.hypot(first.center[0] - expected[0], first.center[1] - expected[1])
        if moved <= cfg.motion.recenter * side or jump > self._allowance():
            return None
        search = self._run_window(image, first.center, self.size, self.features, previous)
        second = self._choose(search, expected, image.shape)
        if np.any(np.abs(second.center - first.center) > 0.5 * first.size):
            return None
        if self.temporal:   # the next frames get the features of the crop the box came from
            self.history[-1] = search.xf
        return second

    def _follow(self, center: np.ndarray, size: np.ndarray, confidence: float) -> None:
        """Move the target to a found box (velocity from re-acquisition-confident frames)."""
        if confidence >= self._config.longterm.redetect_threshold:
            self.longterm.sure_frame = self.frame_index
            self.velocity += _VELOCITY_RATE * (center - self.center - self.velocity)
        self.center = center
        self.size = size
        if self._config.motion.kalman:
            self.kalman.correct(self.center, self.size)

    def _probe_distractor(self, image: np.ndarray,
                          search: Search) -> Optional[Tuple[float, float]]:
        """
        Return where the tracker would go if the target vanished.

        The search crop is run again with the target masked out; a strong peak there is a
        distractor (image x, y).
        """
        cfg = self._config
        t = time.perf_counter()
        masked = search.crop.copy()
        z = search.scale_z
        half = 0.6 * self.size * z
        mid = cfg.step.instance_size / 2.0 + (self.center - np.array(search.center)) * z
        x1, y1 = (int(v) for v in np.floor(mid - half))
        x2, y2 = (int(v) for v in np.ceil(mid + half))
        masked[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = np.array(self.step.pad_color)
        t = self._clock('crop', t)
        probe = self.step.run_crop(masked, search.center, z, self.features)
        self._clock('network', t)
        pick = self.step.choose(probe, self.size, 0.0)
        xs, ys = probe.positions()
        found = float(xs[pick.index]), float(ys[pick.index])
        if cfg.confidence.appearance != 'off':
            # A look-alike is what matches the initial template as well as the target does.
            if pick.score < cfg.distractor.ratio * float(search.cands.scores.max()):
                return None
            size = probe.cands.boxes[2:, pick.index] / z
            if self._appearance(image, found, size) < cfg.longterm.verify_ratio:
                return None
            return found
        cues = self._cues(probe, probe.cands.scores, pick.index, search.center)
        if self.estimator(replace(cues, jump=0.0)) < cfg.distractor.ratio:
            return None
        return found

    def _after_confident(self, image, search: Search, raw_scores, pick: Selection,
                         confidence: float, cues: Cues) -> None:
        """Distractor bookkeeping and the template update on a found frame."""
        cfg = self._config
        self.estimator.follow_appearance(cues)
        if confidence >= cfg.update.min_confidence:
            self.estimator.observe(cues)
        in_template = False
        confident = confidence >= cfg.update.min_confidence
        if cfg.distractor.enabled and (confident or self._placed(cues)):
            side = self.step.map_side(search)
            score_map = cell_scores(raw_scores, side)
            best = raw_scores.reshape(-1, side * side).argmax(axis=0)
            cell = pick.index % (side * side)
            peaks = self.distractors.secondary_peaks(
                score_map, cell // side, cell % side,
                self.step.target_radius_cells(self.size, search.scale_z), cfg.distractor.ratio)
            xs, ys = search.positions()
            points = []
            for r, c in peaks:
                k = int(best[r * side + c]) * side * side + r * side + c
                points.append((float(xs[k]), float(ys[k])))
            # The probe masks the box: only a confident box covers all of the target, else
            # the probe finds the target's uncovered part.
            if (cfg.distractor.probe_interval and confident
                    and self.frame_index % cfg.distractor.probe_interval == 0):
                found = self._probe_distractor(image, search)
                if found is not None:
                    points.append(found)
            target, size = (self.center[0], self.center[1]), tuple(self.size)
            points = self.distractors.away_from(points, target, size)
            in_template = self._in_template(points)
            self.distractors.observe(points, target, size, self.frame_index, confident)
        if self.updater.due(self.frame_index, confidence, not in_template):
            if self.updater.offer(self._update_sample(image)):
                self.features = self.updater.current

    def _placed(self, cues: Cues) -> bool:
        """
        Tell whether the target is where the box is, whatever the confidence says.

        A strong peak (``_strong``) within the plausible jump. A look-alike beside the target
        lowers the confidence itself (its side peak lowers the sharpness): gated on the
        confidence alone, the distractor memory would never record it.
        """
        return cues.jump <= cues.allowance and self._strong(cues)

    def _in_template(self, points) -> bool:
        """
        Whether a look-alike at one of ``points`` (image x, y) reaches into the template window.

        Only there does it enter a template-update sample: a look-alike elsewhere in the search
        crop leaves the sample clean.
        """
        reach = 0.5 * (self.step.template_window(self.size) + self._target_side())
        return any(max(abs(x - self.center[0]), abs(y - self.center[1])) < reach
                   for x, y in points)

    def _update_sample(self, image: np.ndarray):
        """
        Return the template features of the tracked box, for the template update.

        A fusion sample is cut as training cuts its history templates (train/pairs.py): the
        same window, padded with this frame's mean colour (floored), not the first frame's.
        Otherwise it is the crop the appearance check encoded on this frame, when it ran.
        """
        if not self.updater.fusing and self._box_sample is not None:
            return self._box_sample
        pad = pad_colour(image) if self.updater.fusing else None
        return self.step.encode(image, self.center, self.size, pad)

    def _best_in(self, image: np.ndarray, center, features, verify: bool = True,
                 scale: float = 1.0, window: Optional[float] = 0.0) -> Candidate:
        """
        Run one search window and judge its best candidate (no jump).

        ``scale`` sizes the window for the target at that multiple of its size; ``window`` is
        the cosine window's influence (0: none, a re-detection window; None: the step's).
        """
        size = self.size * scale
        search = self._run_window(image, center, size, features)
        t = time.perf_counter()
        raw = search.cands.scores
        search, factor = self._penalised(search)
        pick = self.step.choose(search, size, window)
        box_center, box_size = self.step.box_of(search, pick, size, image.shape)
        cues = replace(self._cues(search, raw, pick.index, box_center, factor[pick.index], size),
                       jump=0.0)
        if verify and self._config.confidence.appearance != 'off':
            t_a = time.perf_counter()
            cues = replace(cues, appearance=self._appearance(image, box_center, box_size))
            self._clock('verify', t_a)
        self._clock('decode', t)
        return Candidate((float(box_center[0]), float(box_center[1])),
                         (float(box_size[0]), float(box_size[1])), pick, cues,
                         self.estimator(cues))

    def _search(self, image: np.ndarray) -> TrackResult:
        """One SEARCHING frame: the windows (predicted position, path, reach) and the trail."""
        cfg = self._config
        lt = self.longterm
        self.history.clear()  # no main crop on this frame: the next one starts afresh
        if cfg.motion.kalman:
            self.kalman.predict()
            expected = self.kalman.center
        else:
            expected = (lt.held_box.cx, lt.held_box.cy)
        side = self._target_side()
        lost_for = lt.low_frames
        window = self.step.search_window(self.size)[1]
        reach_px = (0.5 * window + cfg.longterm.search_growth * side * lost_for
                    + float(np.hypot(*self.velocity)) * lost_for)
        centers = [expected] + lt.next_tiles(cfg.longterm.tiles_per_frame, reach_px)
        best: Optional[Candidate] = None
        # How far the target can have gone since it was last surely seen (target sizes;
        # frames tracked with a middling confidence may already have been on something
        # else): a match farther away was there while the target was not, so it is a
        # look-alike, not the target.
        reach = 1.0 + cfg.longterm.reacquire_speed * (self.frame_index - lt.sure_frame)
        windows = [(c, 1.0) for c in centers]
        step = cfg.longterm.search_scale_step
        if step > 1.0:
            # The target may come back nearer or farther (an exit and return, a drone climbing
            # or descending): the window at the predicted position also runs for it one scale
            # step larger and smaller, in turn.
            windows.insert(1, (expected, step if lost_for % 2 == 0 else 1.0 / step))
        path = self._on_path()
        height, width = image.shape[:2]
        if (0 <= path[0] < width and 0 <= path[1] < height
                and math.hypot(path[0] - expected[0], path[1] - expected[1]) > 0.5 * side):
            # A target that moves on behind an occluder comes back on its own path: a window
            # there too, while the path is in the frame (one that left it, left the view).
            # The window at the held box stays: the path of a target that stopped or turned
            # leads onto background.
            windows.insert(1, (path, 1.0))
        for cand, judge_reach in self._search_candidates(image, windows):
            far = judge_reach and math.hypot(cand.center[0] - expected[0],
                                             cand.center[1] - expected[1]) > reach * side
            if (far and cfg.longterm.reacquire_speed > 0 and self._sure(image, cand)
                    and (cand.cues.appearance or 0.0) < lt.appearance + _CLEARLY_BETTER):
                if cfg.distractor.enabled:
                    self.distractors.observe([cand.center], None, tuple(self.size),
                                             self.frame_index)
                continue
            if best is None or cand.confidence > best.confidence:
                best = cand
        if best is not None:
            self._record(best.center, best.size, best.cues)
        if best is not None and self._sure(image, best):
            return self._reacquire(best)
        lt.step(False, None, cfg.longterm.lost_frames)
        if best is None:
            return TrackResult(lt.held_box, 0.0, TrackState.SEARCHING, 0.0)
        return TrackResult(lt.held_box, best.pick.score, TrackState.SEARCHING,
                           self._below_found(best.confidence))

    def _search_candidates(self, image: np.ndarray, windows) -> Iterator[Tuple[Candidate, bool]]:
        """
        Yield each searching window's best candidate, then the trail's, one at a time.

        One at a time: a look-alike remembered from one window is penalised in the next. The
        flag says whether the candidate's distance from where the target was lost counts: the
        trail got where it is by the step's own moves, so being far is no sign of a look-alike.
        """
        for c, scale in windows:
            yield self._best_in(image, c, self.features, scale=scale), True
        if self.trail is not None:
            yield self._trail_step(image), False

    def _reacquire(self, best: Candidate) -> TrackResult:
        """Take a sure match as the target again: tracking starts afresh from it."""
        self.center = np.array(best.center)
        self.size = np.array(best.size)
        self.kalman.reset(self.center, self.size)
        self.velocity = np.zeros(2)
        box = BBox.from_center(best.center[0], best.center[1], best.size[0], best.size[1])
        self.longterm.start(box, self.frame_index, best.cues.appearance or 1.0)
        if best.cues.appearance is not None:
            self.estimator.restart_appearance(best.cues.appearance)
        return TrackResult(box, best.pick.score, TrackState.TRACKING, best.confidence)

    # -- the trail: the plain step going on while the target is lost ------------------

    def _start_trail(self, center, cues: Cues) -> None:
        """
        Start the trail at the step's match on the frame the target was lost, or none.

        Only a strong peak within the plausible jump is the target moving on (a fast target
        judged lost). A weak match, or a jump, is what took the target's place: following it
        would lead onto a look-alike beside an occluded target.
        """
        start = (self._config.longterm.trail and cues.jump <= cues.allowance
                 and self._strong_peak(cues))
        self.trail = np.array(center, dtype=np.float64) if start else None

    def _trail_step(self, image: np.ndarray) -> Candidate:
        """
        Run the plain step (with its cosine window) from the trail and move the trail on.

        The trail ends where its peak is no longer strong.
        """
        cand = self._best_in(image, tuple(self.trail), self.features, window=None)
        self.trail = np.array(cand.center) if self._strong_peak(cand.cues) else None
        return cand

    def _trail_reacquires(self, image: np.ndarray) -> Optional[TrackResult]:
        """On a LOST frame: step the trail, and re-acquire its match if it is sure."""
        if self.trail is None:
            return None
        cand = self._trail_step(image)
        if not self._sure(image, cand):
            return None
        self._record(cand.center, cand.size, cand.cues)
        return self._reacquire(cand)

    def _on_path(self) -> Tuple[float, float]:
        """Where the target is on its own path: the held box moved on at its last velocity."""
        held, frames = self.longterm.held_box, self.longterm.low_frames + 1
        return (held.cx + frames * float(self.velocity[0]),
                held.cy + frames * float(self.velocity[1]))

    def _below_found(self, confidence: float) -> float:
        """
        Cap a confidence just below found_threshold, for a box judged not to be the target.

        Whatever it scored, a match that was not re-acquired is not the target yet: found
        means confidence >= found_threshold, everywhere.
        """
        return min(confidence, math.nextafter(self._config.confidence.found_threshold, 0.0))

    def _sure(self, image: np.ndarray, cand: Candidate) -> bool:
        """Tell whether a match is sure enough to re-acquire: confident or strong, verified."""
        return ((cand.confidence >= self._config.longterm.redetect_threshold
                 or self._strong(cand.cues)) and self._verified(image, cand))

    def _verified(self, image: np.ndarray, cand: Candidate) -> bool:
        """Check that a re-acquired candidate also matches the initial template well enough."""
        cfg = self._config
        if cand.cues.appearance is not None:
            return cand.cues.appearance >= cfg.longterm.verify_ratio
        ref = self.estimator.reference.score
        if not self.updater.changed:
            return cand.cues.score >= cfg.longterm.verify_ratio * ref
        check = self._best_in(image, cand.center, self.updater.initial, False)
        near = math.hypot(check.center[0] - cand.center[0],
                          check.center[1] - cand.center[1]) < 0.5 * self._target_side()
        return near and check.cues.score >= cfg.longterm.verify_ratio * ref

    def stop(self) -> None:
        """Forget the target."""
        self.state = TrackState.IDLE
        self.longterm.state = TrackState.IDLE
        self.features = ()
        self.history.clear()
        self.last_result = None
