"""
Global camera motion between two frames, from sparse optical flow (OpenCV).

Corners of the previous frame (``cv2.goodFeaturesToTrack``) are followed into the current one
with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``), and a similarity transform
(rotation, uniform scale, translation) is fitted to the matches with RANSAC
(``cv2.estimateAffinePartial2D``), so the target and other movers count as outliers. Both frames
are reduced to grey and to at most ``max_side`` pixels first: a pan or a zoom is a property of
the whole image, and the small copy keeps the cost near a millisecond.

The tracker uses it while the target is not being tracked (LOST / SEARCHING): the place where
the target was last seen is carried along with the camera, so after a pan away and back (or a
drone turning) the search starts where the target now is in the image, not where it was.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np


def _small_grey(image: np.ndarray, max_side: int) -> Tuple[np.ndarray, float]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = min(1.0, max_side / float(max(grey.shape[:2])))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return grey, scale


def estimate_camera_motion(previous: np.ndarray, current: np.ndarray, max_side: int = 320,
                           max_corners: int = 200, min_inliers: int = 12
                           ) -> Optional[np.ndarray]:
    """
    2x3 similarity transform taking pixel positions of ``previous`` to ``current``.

    None when the frames differ in size or too few corners can be followed (a cut, a blank or
    textureless view): the caller then assumes a still camera.
    """
    if previous.shape[:2] != current.shape[:2]:
        return None
    a, scale = _small_grey(previous, max_side)
    b, _ = _small_grey(current, max_side)
    points = cv2.goodFeaturesToTrack(a, maxCorners=max_corners, qualityLevel=0.01,
                                     minDistance=7, blockSize=7)
    if points is None or len(points) < min_inliers:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None, winSize=(21, 21),
                                                maxLevel=3)
    ok = status.reshape(-1) == 1
    if ok.sum() < min_inliers:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(points[ok], moved[ok], method=cv2.RANSAC,
                                                  ransacReprojThreshold=1.0)
    if matrix is None or inliers is None or int(inliers.sum()) < min_inliers:
        return None
    matrix = matrix.astype(np.float64)
    # The fit is in the reduced frame: x_small = s * x; only the translation changes scale.
    matrix[:, 2] /= scale
    return matrix


def apply_to_point(matrix: np.ndarray, x: float, y: float) -> Tuple[float, float]:
    """Where the pixel (x, y) of the previous frame is in the current one."""
    return (float(matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]),
            float(matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]))


def scale_of(matrix: np.ndarray) -> float:
    """Return the uniform scale (zoom) of a similarity transform."""
    return float(np.hypot(matrix[0, 0], matrix[1, 0]))
