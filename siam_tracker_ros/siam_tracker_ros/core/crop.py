"""
Square crops around the target, with mean-colour padding.

The crop window follows the pysot / NanoTrack convention the published weights were trained
with: a window of ``original_size`` pixels (an integer), whose top-left corner is
``floor(centre - (original_size + 1) / 2 + 0.5)``, resized to ``out_size`` pixels with bilinear
interpolation (``cv2.resize``). Pixels outside the image take the padding colour. The sampling is
exactly upstream's (pad, slice, resize), but only the window is ever padded, never the whole
frame: a window inside the frame is resized straight from a view of it, one that leaves the frame
first gets a border of the padding colour around its inside part.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import cv2
import numpy as np


def window_origin(center: float, original_size: int) -> int:
    """Top-left coordinate (integer) of the crop window along one axis."""
    return int(math.floor(center - (original_size + 1) / 2.0 + 0.5))


def pad_colour(image: np.ndarray) -> Tuple[float, float, float]:
    """Return the image's mean colour per channel, floored: what crops beyond its border get."""
    return tuple(float(np.floor(c)) for c in cv2.mean(image)[:3])


def crop_window(image: np.ndarray, center: Tuple[float, float], original_size: int,
                out_size: int, pad_color: Sequence[float]) -> np.ndarray:
    """
    Cut the (original_size)^2 window centred at ``center`` and resize it to out_size^2 (uint8).

    ``image`` is HxWx3 uint8; ``pad_color`` is the per-channel fill for pixels outside it.
    """
    if original_size < 1:
        raise ValueError(f'crop size must be >= 1 pixel, got {original_size}')
    size = int(original_size)
    x0 = window_origin(center[0], size)
    y0 = window_origin(center[1], size)
    height, width = image.shape[:2]
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x0 + size - width), max(0, y0 + size - height)
    if left + right >= size or top + bottom >= size:      # the window misses the frame
        return np.full((out_size, out_size, 3), [int(c) for c in pad_color], dtype=np.uint8)
    window = image[y0 + top:y0 + size - bottom, x0 + left:x0 + size - right]
    if left or top or right or bottom:
        window = cv2.copyMakeBorder(window, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                    value=tuple(float(c) for c in pad_color))
    if size == out_size:
        return np.ascontiguousarray(window)
    return cv2.resize(window, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


def to_blob(crop: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 crop -> 1x3xHxW float32 (raw values; any normalisation is the backend's)."""
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def context_size(w: float, h: float, context_amount: float) -> float:
    """Side of the square template window: sqrt((w + p)(h + p)), p = context * (w + h)."""
    pad = context_amount * (w + h)
    return math.sqrt((w + pad) * (h + pad))
