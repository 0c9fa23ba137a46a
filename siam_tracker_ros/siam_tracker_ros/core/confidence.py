"""
A per-frame confidence that the chosen box is on the target: P(IoU >= 0.5), learned.

The cues of the chosen candidate, all but the score relative to the first frame or the
target's own levels:

* ``score``: the logit of the peak score times the distractor factor (1 unless the candidate
  sits on a remembered look-alike). It is absolute, not relative to the first frame: the
  scores of a confident head crowd near 1 (a float32 score is 1.0 from logit 17 on) while
  their logits, the head's logit margin kept in float64, spread out (10-19 on NanoTrack v3's
  first frames), so the first frame is no steady reference and the absolute logit ranks
  boxes best (tune frames, leave-one-sequence-out AUROC 0.927 against 0.899 relative to the
  first frame). Its scale is the head's own: ``siam-eval --fit-confidence`` refits the
  coefficients for a model (v3's fit also served v2 best, README "Measured results");
* ``sharpness``: the log of the peak-to-sidelobe ratio of the score map over its running
  level on confidently tracked frames (which starts at the first-frame value);
* ``motion``: the jump of the peak from where the target was expected (the last position
  moved by the target's measured velocity, camera motion taken out when measured), in units
  of the plausible jump: ``conf_motion_allowance`` target sizes plus the target's own speed;
* ``appearance``: the cosine similarity between the initial template's features and the
  features of a template crop cut at the chosen box, relative to the same similarity for
  crops shifted by a tenth of the box on the first frame (costs one template-branch run, so
  it is measured only on some frames), and its change from its running level on confident
  frames (``appearance_change``: what took the target's place mostly looks different from
  what the target looked like lately, even where both resemble the first frame alike).

A logistic model combines them: ``P = sigmoid(c . [1, features])``, with one coefficient set
for frames without the appearance cue and one for frames with it (``conf_coefficients``,
``conf_coefficients_appearance``). ``eval/confidence_fit.py`` fits them from frames with known
IoU (``siam-eval --fit-confidence``).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Dict, Optional

import numpy as np


# Floor of the sidelobe spread (scores are probabilities): without it an almost empty sidelobe
# makes the ratio explode and the first-frame reference meaningless.
SIDELOBE_FLOOR = 0.05
# The sharpness reference follows its own level on confident frames at this rate.
RECENT_RATE = 0.1
# The appearance level follows found frames faster: a target that turns or deforms changes
# gradually, what takes its place (an occluder, background after an exit) suddenly.
APPEARANCE_RATE = 0.3
# The appearance holds still while its last measurement lies within this of its level; only
# then may certain frames skip the appearance check (core/tracker.py).
APPEARANCE_STILL = 0.03
# The definition of the cues that coefficients are fitted for, recorded in model manifests:
# 1 had the score relative to the first frame's (clipped at 1e-4), 2 has it absolute.
CUES_VERSION = 2
# Feature names, in coefficient order after the bias.
FEATURES = ('score', 'sharpness', 'motion')
FEATURES_APPEARANCE = FEATURES + ('appearance', 'appearance_change')
# Each feature is clipped to a range, so that one wild value cannot dominate the sum.
_CLIP = {'score': (-8.0, 16.0), 'sharpness': (-3.0, 1.0), 'motion': (0.0, 4.0),
         'appearance': (-0.5, 1.5), 'appearance_change': (-1.0, 0.5)}


def cell_scores(scores: np.ndarray, size: int) -> np.ndarray:
    """Raw scores as a (size, size) map, the best anchor per cell for anchor heads."""
    return scores.reshape(-1, size, size).max(axis=0)


def peak_to_sidelobe(score_map: np.ndarray, row: int, col: int, radius: int) -> float:
    """
    Return (peak - mean of the sidelobe) / std of the sidelobe.

    The sidelobe excludes a square of ``radius`` cells around the peak.
    """
    values = np.asarray(score_map, dtype=np.float64)
    window = values[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1]
    count = values.size - window.size
    if count < 2:
        return 0.0
    # Mean and spread of the map outside the window, from sums (no mask: once per candidate
    # judged, so it is on every frame's path).
    mean = (values.sum() - window.sum()) / count
    square = ((values * values).sum() - (window * window).sum()) / count
    std = math.sqrt(max(square - mean * mean, 0.0))
    return float((values[row, col] - mean) / (std + SIDELOBE_FLOOR))


@dataclass(frozen=True)
class Cues:
    """The raw cues of one candidate (``appearance`` None where it was not measured)."""

    score: float
    sharpness: float
    jump: float                     # pixels from the predicted position
    allowance: float = 1.0          # plausible jump in pixels
    distractor: float = 1.0
    appearance: Optional[float] = None


@dataclass(frozen=True)
class Reference:
    """First-frame values: where the sharpness level starts, what strong peaks are measured by."""

    score: float
    sharpness: float


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-safe."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


class ConfidenceEstimator:
    """Turns cues into P(IoU >= 0.5) (see the module docstring)."""

    def __init__(self, config):
        """Read a ConfidenceConfig."""
        self.set_config(config)
        self.reference = Reference(1.0, 1.0)
        self.recent_sharpness = 1.0
        self.recent_appearance = 1.0
        self._unmeasured = 0
        self._last_appearance: Optional[float] = None

    def set_config(self, config) -> None:
        """Take new settings (run-time change)."""
        self.coefficients = np.asarray(config.coefficients, dtype=np.float64)
        self.coefficients_appearance = np.asarray(config.coefficients_appearance,
                                                  dtype=np.float64)

    def calibrate(self, cues: Cues) -> None:
        """Remember the first-frame cues."""
        self.reference = Reference(max(cues.score, 1e-3), max(cues.sharpness, 1e-3))
        self.recent_sharpness = self.reference.sharpness
        self.recent_appearance = 1.0
        self._unmeasured = 0
        self._last_appearance = None

    def observe(self, cues: Cues) -> None:
        """Follow the sharpness level of confident frames (slow running mean)."""
        self.recent_sharpness += RECENT_RATE * (cues.sharpness - self.recent_sharpness)

    def follow_appearance(self, cues: Cues) -> None:
        """
        Follow the appearance level of found frames (fast running mean: gradual change).

        Called on every found frame; the level moves at APPEARANCE_RATE per found frame.
        Found frames whose appearance was not measured (certain frames between checks) count
        as looking like the last measured one: a measurement after k found frames first moves
        the level k - 1 steps towards the last measurement, then one step towards itself. With
        a check on every frame this is the plain running mean; with sparser checks no single
        measurement (often the first uncertain frame, the start of an occlusion) takes over
        the level.
        """
        self._unmeasured += 1
        if cues.appearance is None:
            return
        k, self._unmeasured = self._unmeasured, 0
        if k > 1 and self._last_appearance is not None:
            held = 1.0 - (1.0 - APPEARANCE_RATE) ** (k - 1)
            self.recent_appearance += held * (self._last_appearance - self.recent_appearance)
        self._last_appearance = cues.appearance
        self.recent_appearance += APPEARANCE_RATE * (cues.appearance - self.recent_appearance)

    def restart_appearance(self, appearance: float) -> None:
        """Start the appearance level again at a re-acquired match's (verified) appearance."""
        self.recent_appearance = appearance
        self._last_appearance = appearance
        self._unmeasured = 0

    @property
    def appearance_settled(self) -> bool:
        """
        Tell whether the appearance holds still.

        It does while the last measurement lies within APPEARANCE_STILL of the level; a
        turning or deforming target keeps its measurements off the level, which trails them.
        """
        return (self._last_appearance is not None
                and abs(self._last_appearance - self.recent_appearance) < APPEARANCE_STILL)

    def features(self, cues: Cues) -> Dict[str, float]:
        """Return the model's inputs (clipped); the appearance ones only where measured."""
        values = {'score': _logit(cues.score * cues.distractor),
                  'sharpness': math.log(max(cues.sharpness, 1e-3)
                                        / max(self.recent_sharpness, 1e-3)),
                  'motion': cues.jump / max(cues.allowance, 1e-6)}
        if cues.appearance is not None:
            values['appearance'] = cues.appearance
            values['appearance_change'] = cues.appearance - self.recent_appearance
        return {k: float(min(max(v, _CLIP[k][0]), _CLIP[k][1])) for k, v in values.items()}

    def __call__(self, cues: Cues) -> float:
        """Confidence of one candidate."""
        values = self.features(cues)
        if cues.appearance is None:
            names, coef = FEATURES, self.coefficients
        else:
            names, coef = FEATURES_APPEARANCE, self.coefficients_appearance
        z = coef[0] + sum(c * values[n] for c, n in zip(coef[1:], names))
        return float(sigmoid(z))
