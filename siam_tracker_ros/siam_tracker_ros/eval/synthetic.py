"""Synthetic tracking sequences with exact ground truth (no data files needed).

A textured target moves over a textured background along a smooth path while it slowly
changes size; the ground truth is known exactly. Used by the tests and by ``make demo``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import cv2
import numpy as np


@dataclass(frozen=True)
class SyntheticSequence:
    """Frames (BGR uint8) and the exact boxes (x, y, w, h) of the target in each."""

    frames: List[np.ndarray]
    boxes: np.ndarray


def _texture(rng: np.random.Generator, height: int, width: int, blur: float) -> np.ndarray:
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def moving_target(frames: int = 120, width: int = 480, height: int = 360,
                  target: int = 48, seed: int = 0) -> SyntheticSequence:
    """A patterned square that circles the frame and breathes between 0.8x and 1.25x size."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, height, width, 4.0)
    background = cv2.addWeighted(background, 0.6, np.full_like(background, 90), 0.4, 0)
    pattern = _texture(rng, 64, 64, 1.5)
    cv2.rectangle(pattern, (8, 8), (55, 55), (255, 255, 255), 3)
    cv2.circle(pattern, (32, 32), 12, (0, 0, 255), -1)
    out, boxes = [], []
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        size = target * (1.0 + 0.22 * np.sin(2 * phase))
        cx = width / 2 + 0.3 * width * np.cos(phase)
        cy = height / 2 + 0.28 * height * np.sin(phase)
        x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
        side = int(round(size))
        frame = background.copy()
        frame[y0:y0 + side, x0:x0 + side] = cv2.resize(pattern, (side, side),
                                                       interpolation=cv2.INTER_AREA)
        out.append(frame)
        boxes.append((x0, y0, side, side))
    return SyntheticSequence(out, np.asarray(boxes, dtype=np.float64))


def write_video(seq: SyntheticSequence, path, fps: float = 25.0) -> None:
    """Write the frames as a video file (codec from the extension: .avi MJPG, else mp4v)."""
    height, width = seq.frames[0].shape[:2]
    codec = 'MJPG' if str(path).endswith('.avi') else 'mp4v'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f'cannot write video {path}')
    for frame in seq.frames:
        writer.write(frame)
    writer.release()


def write_groundtruth(boxes: np.ndarray, path) -> None:
    """Write boxes as comma-separated x,y,w,h lines (NaN rows for absent frames)."""
    np.savetxt(str(path), boxes, fmt='%.2f', delimiter=',')
