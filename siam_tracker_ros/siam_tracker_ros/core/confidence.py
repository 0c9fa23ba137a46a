"""
A per-frame confidence that the target is there, comparable across models.

Five cues, each mapped to [0, 1] and multiplied (weighted by exponents):

* the raw peak score, relative to the peak score on the first frame;
* the peak's sharpness (peak-to-sidelobe ratio of the score map), relative to half its
  running level on confidently tracked frames (which starts at the first-frame value);
* motion plausibility: how far the peak lies from where the target was expected (the last
  position moved by the target's recent velocity, or the Kalman prediction), in target sizes
  (a Gaussian of width ``conf_motion_sigma``);
* a distractor factor (1 unless the candidate sits on a remembered distractor);
* appearance: the cosine similarity between the initial template's features and the features
  of a template crop cut at the chosen box, relative to the same similarity for crops shifted
  by a tenth of the box on the first frame; a ramp from ``conf_appearance_low`` (0) to
  ``conf_appearance_high`` (1). Unlike the classification score (which NanoTrack v3 keeps near
  1 on background once the target is gone), it falls when the box holds something else.

Dividing by the first-frame values (the tracker runs the search branch once on the initial
frame) is the calibration: a value of 1 means 'as sure as on the frame the user pointed at',
whatever the model, so a threshold means the same thing for NanoTrack v2, v3 or SiamRPN++.
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np


# Floor of the sidelobe spread (scores are probabilities): without it an almost empty sidelobe
# makes the ratio explode and the first-frame reference meaningless.
SIDELOBE_FLOOR = 0.05
# The sharpness is compared with its own recent level on confident frames (some targets are
# never as distinct as on the first frame): at or above MARGIN times that level it counts fully.
RECENT_RATE = 0.1
SHARPNESS_MARGIN = 0.5


def cell_scores(scores: np.ndarray, size: int) -> np.ndarray:
    """Raw scores as a (size, size) map, the best anchor per cell for anchor heads."""
    return scores.reshape(-1, size, size).max(axis=0)


def peak_to_sidelobe(score_map: np.ndarray, row: int, col: int, radius: int) -> float:
    """
    Return (peak - mean of the sidelobe) / std of the sidelobe.

    The sidelobe excludes a square of ``radius`` cells around the peak.
    """
    mask = np.ones(score_map.shape, dtype=bool)
    mask[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1] = False
    side = score_map[mask]
    if side.size < 2:
        return 0.0
    return float((score_map[row, col] - side.mean()) / (side.std() + SIDELOBE_FLOOR))


@dataclass(frozen=True)
class Cues:
    """The raw cues of one candidate."""

    score: float
    sharpness: float
    jump: float
    appearance: float = 1.0


@dataclass(frozen=True)
class Reference:
    """First-frame values the cues are divided by."""

    score: float
    sharpness: float


class ConfidenceEstimator:
    """Turns cues into a confidence in [0, 1] (see the module docstring)."""

    def __init__(self, config):
        """Read the conf_* fields of a TrackerConfig."""
        self.set_config(config)
        self.reference = Reference(1.0, 1.0)
        self.recent_sharpness = 1.0

    def set_config(self, config) -> None:
        """Take new weights (run-time change)."""
        self.sharpness_weight = config.conf_sharpness_weight
        self.motion_weight = config.conf_motion_weight
        self.motion_sigma = config.conf_motion_sigma
        self.appearance_low = config.conf_appearance_low
        self.appearance_high = config.conf_appearance_high

    def calibrate(self, cues: Cues) -> None:
        """Remember the first-frame cues."""
        self.reference = Reference(max(cues.score, 1e-3), max(cues.sharpness, 1e-3))
        self.recent_sharpness = self.reference.sharpness

    def observe(self, cues: Cues) -> None:
        """Follow the sharpness level of confidently tracked frames (slow running mean)."""
        self.recent_sharpness += RECENT_RATE * (cues.sharpness - self.recent_sharpness)

    def appearance_term(self, appearance: float) -> float:
        """Map the appearance similarity to [0, 1] (a linear ramp)."""
        span = max(self.appearance_high - self.appearance_low, 1e-6)
        return min(max((appearance - self.appearance_low) / span, 0.0), 1.0)

    def __call__(self, cues: Cues, distractor_factor: float = 1.0) -> float:
        """Confidence of one candidate."""
        s = min(max(cues.score / self.reference.score, 0.0), 1.0)
        level = SHARPNESS_MARGIN * max(self.recent_sharpness, 1e-3)
        p = min(max(cues.sharpness / level, 0.0), 1.0)
        m = math.exp(-0.5 * (cues.jump / self.motion_sigma) ** 2)
        a = self.appearance_term(cues.appearance)
        value = s * p ** self.sharpness_weight * m ** self.motion_weight * distractor_factor * a
        return float(min(max(value, 0.0), 1.0))
