"""
Constant-velocity Kalman filter on the target centre and size.

The state is (cx, cy, w, h, vcx, vcy, vw, vh) in image pixels and pixels per frame. While the
target is confidently tracked every frame is a measurement; through low-confidence frames and
while searching the filter only predicts, with the velocity damped each frame so a long
absence does not send the prediction out of the image.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

_TRANSITION = np.eye(8)
_TRANSITION[:4, 4:] = np.eye(4)
_MEASURE = np.hstack([np.eye(4), np.zeros((4, 4))])


class ConstantVelocityKalman:
    """Kalman filter with noise scaled by the target size (so it works at any resolution)."""

    def __init__(self, position_noise: float = 0.05, velocity_noise: float = 0.01,
                 measurement_noise: float = 0.1, damping: float = 0.9):
        """Noise values are standard deviations as fractions of the target size."""
        self.position_noise = position_noise
        self.velocity_noise = velocity_noise
        self.measurement_noise = measurement_noise
        self.damping = damping
        self.x = np.zeros(8)
        self.p = np.eye(8)
        self.coasting = 0

    def _scale(self) -> float:
        return float(max(np.sqrt(max(self.x[2], 1.0) * max(self.x[3], 1.0)), 1.0))

    def reset(self, center, size) -> None:
        """Start at a known box with zero velocity."""
        self.x = np.array([center[0], center[1], size[0], size[1], 0, 0, 0, 0], dtype=float)
        s = self._scale()
        self.p = np.diag([0.1 * s] * 4 + [0.5 * s] * 4) ** 2
        self.coasting = 0

    def predict(self) -> None:
        """Advance one frame."""
        s = self._scale()
        q = np.diag([self.position_noise * s] * 4 + [self.velocity_noise * s] * 4) ** 2
        self.x = _TRANSITION @ self.x
        self.p = _TRANSITION @ self.p @ _TRANSITION.T + q
        if self.coasting:
            self.x[4:] *= self.damping
        self.coasting += 1

    def correct(self, center, size) -> None:
        """Fold in a measured box (after ``predict`` for this frame)."""
        z = np.array([center[0], center[1], size[0], size[1]], dtype=float)
        s = self._scale()
        r = np.eye(4) * (self.measurement_noise * s) ** 2
        innovation = z - _MEASURE @ self.x
        cov = _MEASURE @ self.p @ _MEASURE.T + r
        gain = self.p @ _MEASURE.T @ np.linalg.inv(cov)
        self.x = self.x + gain @ innovation
        self.p = (np.eye(8) - gain @ _MEASURE) @ self.p
        self.coasting = 0

    @property
    def center(self) -> Tuple[float, float]:
        """Predicted / filtered centre."""
        return float(self.x[0]), float(self.x[1])

    @property
    def size(self) -> Tuple[float, float]:
        """Predicted / filtered size."""
        return float(self.x[2]), float(self.x[3])
