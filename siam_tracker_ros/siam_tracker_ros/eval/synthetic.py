"""
Synthetic tracking sequences with exact ground truth (numpy + OpenCV only).

A textured target (a random colour pattern with a border) moves on a smooth Lissajous path,
with a slow scale change, over a cluttered textured background; the ground-truth box is the
exact transformed rectangle of the target, in the dataset format (x,y,w,h per line, 0-based).
Used by the tests, siam-bench, check-backend and ``make demo`` (no data files needed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

import cv2
import numpy as np

DEFAULT_SIZE = (480, 320)
DEFAULT_FRAMES = 150
DEFAULT_FPS = 30.0


def _noise_texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    small = rng.integers(0, 256, size=(max(height // cell, 2), max(width // cell, 2), 3),
                         dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = _noise_texture(rng, height, width, 40).astype(np.float32) * 0.5
    base += _noise_texture(rng, height, width, 8).astype(np.float32) * 0.25
    image = np.clip(base + 40, 0, 255).astype(np.uint8)
    for _ in range(25):  # clutter: a few muted shapes
        color = tuple(int(c) for c in rng.integers(40, 170, size=3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, center, int(rng.integers(6, 30)), color, -1, cv2.LINE_AA)
        else:
            size = (int(rng.integers(8, 40)), int(rng.integers(8, 40)))
            cv2.rectangle(image, center, (center[0] + size[0], center[1] + size[1]), color, -1)
    return image


def _target(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    patch = _noise_texture(rng, height, width, 6)
    patch = cv2.addWeighted(patch, 0.6, np.full_like(patch, (30, 60, 220)), 0.4, 0)
    cv2.rectangle(patch, (0, 0), (width - 1, height - 1), (255, 255, 255), 3)
    cv2.circle(patch, (width // 2, height // 2), min(width, height) // 5, (20, 230, 250), -1)
    return patch


def generate_frames(frames: int = DEFAULT_FRAMES, size: Tuple[int, int] = DEFAULT_SIZE,
                    seed: int = 7) -> Iterator[Tuple[np.ndarray, Tuple[float, float, float,
                                                                       float]]]:
    """Yield (BGR frame, exact ground-truth box x, y, w, h) for each frame."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = _background(rng, width, height)
    tw, th = max(width // 8, 16), max(height // 6, 16)
    target = _target(rng, tw, th)
    mask = np.full((th, tw), 255, np.uint8)
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale = 1.0 + 0.25 * np.sin(2 * np.pi * t)
        w, h = tw * scale, th * scale
        cx = width * (0.5 + 0.3 * np.sin(2 * np.pi * 1.0 * t))
        cy = height * (0.5 + 0.25 * np.sin(2 * np.pi * 1.5 * t + 0.6))
        x, y = cx - w / 2.0, cy - h / 2.0
        # Maps patch pixel edges [0, tw] x [0, th] onto [x, x + w] x [y, y + h] exactly.
        affine = np.array([[scale, 0.0, x + 0.5 * scale - 0.5],
                           [0.0, scale, y + 0.5 * scale - 0.5]], np.float64)
        warped = cv2.warpAffine(target, affine, (width, height), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, affine, (width, height), flags=cv2.INTER_LINEAR)
        a = alpha.astype(np.float32)[..., None] / 255.0
        frame = (warped.astype(np.float32) * a + background.astype(np.float32) * (1 - a))
        box = (float(x), float(y), float(w), float(h))
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8), box


def groundtruth_path(video: Path) -> Path:
    """Return the ground-truth path next to a generated clip: ``<stem>.groundtruth.txt``."""
    video = Path(video)
    return video.with_name(video.stem + '.groundtruth.txt')


def write_clip(out, frames: int = DEFAULT_FRAMES, size: Tuple[int, int] = DEFAULT_SIZE,
               fps: float = DEFAULT_FPS, seed: int = 7) -> Tuple[Path, Path]:
    """
    Write the clip to ``out`` (a .mp4/.avi video, or a folder of PNGs) plus its ground truth.

    Returns (clip path, ground-truth path); the ground truth goes to ``<stem>.groundtruth.txt``
    next to a video, or ``groundtruth.txt`` beside the ``img/`` folder of a folder output.
    """
    out = Path(out)
    rows = []
    if out.suffix.lower() in ('.mp4', '.avi', '.mkv'):
        out.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*('mp4v' if out.suffix.lower() == '.mp4' else 'MJPG'))
        writer = cv2.VideoWriter(str(out), fourcc, float(fps), tuple(size))
        if not writer.isOpened():
            raise RuntimeError(f'OpenCV cannot write {out}; use a .avi name or a folder')
        try:
            for frame, box in generate_frames(frames, size, seed):
                writer.write(frame)
                rows.append(box)
        finally:
            writer.release()
        gt = groundtruth_path(out)
    else:
        img = out / 'img'
        img.mkdir(parents=True, exist_ok=True)
        for i, (frame, box) in enumerate(generate_frames(frames, size, seed)):
            cv2.imwrite(str(img / f'{i + 1:05d}.png'), frame)
            rows.append(box)
        gt = out / 'groundtruth.txt'
    gt.write_text(''.join(f'{x:.3f},{y:.3f},{w:.3f},{h:.3f}\n' for x, y, w, h in rows))
    return out, gt


@dataclass(frozen=True)
class SyntheticSequence:
    """Frames (BGR uint8) and the exact boxes (x, y, w, h) of the target in each."""

    frames: List[np.ndarray]
    boxes: np.ndarray


def moving_target(frames: int = DEFAULT_FRAMES, size: Tuple[int, int] = DEFAULT_SIZE,
                  seed: int = 7) -> SyntheticSequence:
    """Generate the clip and hold it in memory."""
    pairs = list(generate_frames(frames, size, seed))
    return SyntheticSequence([f for f, _ in pairs], np.asarray([b for _, b in pairs]))
