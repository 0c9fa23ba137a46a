"""Frames from a video file, an image folder or a sequence folder (no ROS imports)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from .sequences import GROUNDTRUTH_FILE, IMAGE_DIR, list_frames, read_groundtruth


class FrameSourceError(ValueError):
    """A video or image folder cannot be read."""


class FrameSource:
    """
    Iterate over the BGR frames of a video file or an image folder, any number of times.

    ``path`` is a video file (anything OpenCV reads), a folder of images (natural order) or a
    sequence folder (``img/`` + ``groundtruth.txt``, whose ground truth becomes the default).
    """

    def __init__(self, path, groundtruth: Optional[str] = None) -> None:
        """Open ``path``; read the ground truth (x,y,w,h per frame) when given or found."""
        self.path = Path(path).expanduser()
        self.images: Tuple[Path, ...] = ()
        self.fps = 0.0
        gt_path = Path(groundtruth).expanduser() if groundtruth else None
        if self.path.is_dir():
            folder = self.path
            if (self.path / IMAGE_DIR).is_dir():
                folder = self.path / IMAGE_DIR
                if gt_path is None and (self.path / GROUNDTRUTH_FILE).is_file():
                    gt_path = self.path / GROUNDTRUTH_FILE
            self.images = list_frames(folder)
            if not self.images:
                raise FrameSourceError(f'{folder} holds no .jpg/.png/.bmp images')
            first = cv2.imread(str(self.images[0]), cv2.IMREAD_COLOR)
            if first is None:
                raise FrameSourceError(f'cannot read image {self.images[0]}')
            self.count = len(self.images)
        elif self.path.is_file():
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise FrameSourceError(f'OpenCV cannot open video {self.path}')
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            ok, first = cap.read()
            cap.release()
            if not ok:
                raise FrameSourceError(f'video {self.path} has no readable frame')
        else:
            raise FrameSourceError(f'{self.path} is neither a video file nor an image folder')
        self.height, self.width = first.shape[:2]
        self.groundtruth: Optional[np.ndarray] = (
            read_groundtruth(gt_path) if gt_path is not None else None)

    def frames(self) -> Iterator[np.ndarray]:
        """Yield every frame once, in order."""
        if self.images:
            for p in self.images:
                image = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if image is None:
                    raise FrameSourceError(f'cannot read image {p}')
                yield image
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                yield image
        finally:
            cap.release()

    def gt_box(self, index: int) -> Optional[np.ndarray]:
        """Ground-truth row of frame ``index`` (NaN row = absent), None without ground truth."""
        if self.groundtruth is None or index >= len(self.groundtruth):
            return None
        return self.groundtruth[index]
