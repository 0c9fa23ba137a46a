"""Square crops around the target, with mean-colour padding, done by one affine warp.

The crop window follows the pysot / NanoTrack convention the published weights were trained
with: a window of ``original_size`` pixels (an integer), whose top-left corner is
``floor(centre - (original_size + 1) / 2 + 0.5)``, resized to ``out_size`` pixels with bilinear
interpolation. Pixels outside the image take the padding colour. Instead of padding the frame
and resizing a slice (upstream), one ``cv2.warpAffine`` maps output pixel centres straight into
the frame, so the cost does not grow with the amount of padding.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import cv2
import numpy as np


def window_origin(center: float, original_size: int) -> int:
    """Top-left coordinate (integer) of the crop window along one axis."""
    return int(math.floor(center - (original_size + 1) / 2.0 + 0.5))


def crop_matrix(center: Tuple[float, float], original_size: int, out_size: int) -> np.ndarray:
    """2x3 affine that maps output pixel (u, v) to the frame position it samples (inverse map).

    Output pixel centre u samples ``x0 + (u + 0.5) * original_size / out_size - 0.5``, which is
    exactly what ``cv2.resize`` (bilinear) does on the integer window [x0, x0 + size - 1].
    """
    scale = original_size / float(out_size)
    x0 = window_origin(center[0], original_size)
    y0 = window_origin(center[1], original_size)
    offset = 0.5 * scale - 0.5
    return np.array([[scale, 0.0, x0 + offset],
                     [0.0, scale, y0 + offset]], dtype=np.float64)


def crop_window(image: np.ndarray, center: Tuple[float, float], original_size: int,
                out_size: int, pad_color: Sequence[float]) -> np.ndarray:
    """Cut the (original_size)^2 window centred at ``center`` and resize it to out_size^2 (uint8).

    ``image`` is HxWx3 uint8; ``pad_color`` is the per-channel fill for pixels outside it.
    """
    if original_size < 1:
        raise ValueError(f'crop size must be >= 1 pixel, got {original_size}')
    size = int(original_size)
    x0 = window_origin(center[0], size)
    y0 = window_origin(center[1], size)
    height, width = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + size <= width and y0 + size <= height:
        window = image[y0:y0 + size, x0:x0 + size]
        if size == out_size:
            return window.copy()
        return cv2.resize(window, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    matrix = crop_matrix(center, size, int(out_size))
    border = tuple(float(c) for c in pad_color)
    return cv2.warpAffine(image, matrix, (out_size, out_size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def to_blob(crop: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 crop -> 1x3xHxW float32 (raw values; any normalisation is the backend's)."""
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def context_size(w: float, h: float, context_amount: float) -> float:
    """Side of the square template window: sqrt((w + p)(h + p)), p = context * (w + h)."""
    pad = context_amount * (w + h)
    return math.sqrt((w + pad) * (h + pad))
