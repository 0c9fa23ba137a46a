"""
Single-object tracking sequences on disk: ``<Name>/img/*.jpg`` plus ``groundtruth.txt``.

The ground truth has one row per frame, ``x,y,w,h`` in 0-based pixels (comma, tab or space
separated); a row of NaN means the target is absent from that frame.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
import re
from typing import Iterable, Iterator, List, Optional, Sequence as Seq, Tuple, Union

import cv2
import numpy as np

from siam_tracker_ros.core.types import BBox

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
GROUNDTRUTH_FILE = 'groundtruth.txt'
IMAGE_DIR = 'img'

_SEPARATORS = re.compile(r'[,\s]+')
_DIGITS = re.compile(r'(\d+)')

PathLike = Union[str, Path]


@dataclass(frozen=True, eq=False)
class Sequence:
    """
    One tracking sequence: its frames in order and one ground-truth row per frame.

    ``gt`` is an ``(N, 4)`` float64 array of (x, y, w, h); rows where the target is absent
    are all NaN.
    """

    name: str
    frames: Tuple[Path, ...]
    gt: np.ndarray

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.frames)

    @property
    def init_box(self) -> BBox:
        """Return the ground-truth box of the first frame, the one trackers are started with."""
        return BBox.from_sequence(self.gt[0])

    @property
    def absent(self) -> np.ndarray:
        """Return a boolean mask of the frames without the target (NaN ground truth)."""
        return np.isnan(self.gt).any(axis=1)

    @property
    def has_absent_frames(self) -> bool:
        """Return True when some frame after the first has no target."""
        return bool(self.absent[1:].any())


def natural_key(name: str) -> Tuple:
    """Sort key that orders embedded numbers by value ('2.jpg' before '10.jpg')."""
    parts = _DIGITS.split(name)
    return tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in parts if p != '')


def read_groundtruth(path: PathLike) -> np.ndarray:
    """
    Read a ground-truth file into an ``(N, 4)`` float64 array (NaN rows = target absent).

    Accepts comma, tab or whitespace separated values. A row with any NaN becomes all NaN.
    Trailing empty lines are ignored; an empty line inside the file is an error because it
    would shift every later row by one frame.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = [f for f in _SEPARATORS.split(line.strip()) if f]
        if len(fields) != 4:
            raise ValueError(
                f'{path}:{number}: expected 4 values x,y,w,h, got {len(fields)} ({line!r}); '
                'write one box per frame, NaN,NaN,NaN,NaN where the target is absent')
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise ValueError(f'{path}:{number}: not a number in {line!r}') from None
        if any(math.isnan(v) for v in values):
            values = [math.nan] * 4
        elif any(math.isinf(v) for v in values):
            raise ValueError(f'{path}:{number}: infinite value in {line!r}')
        rows.append(values)
    if not rows:
        raise ValueError(f'{path}: no ground-truth rows')
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def list_frames(image_dir: PathLike) -> Tuple[Path, ...]:
    """Image files of a sequence in natural (numeric-aware) order."""
    image_dir = Path(image_dir)
    frames = [p for p in image_dir.iterdir()
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return tuple(sorted(frames, key=lambda p: natural_key(p.name)))


def is_sequence_dir(path: PathLike) -> bool:
    """Tell whether ``path`` looks like a sequence folder (``img/`` and ``groundtruth.txt``)."""
    path = Path(path)
    return (path / IMAGE_DIR).is_dir() and (path / GROUNDTRUTH_FILE).is_file()


def load_sequence(path: PathLike) -> Sequence:
    """Read one sequence folder; its frame count must equal its ground-truth row count."""
    path = Path(path)
    if not is_sequence_dir(path):
        raise ValueError(f'{path} is not a sequence folder: expected {IMAGE_DIR}/ with images '
                         f'and {GROUNDTRUTH_FILE}')
    frames = list_frames(path / IMAGE_DIR)
    gt = read_groundtruth(path / GROUNDTRUTH_FILE)
    if len(frames) != len(gt):
        raise ValueError(f'{path}: {len(frames)} images but {len(gt)} ground-truth rows; '
                         'each frame needs exactly one row')
    if np.isnan(gt[0]).any() or gt[0, 2] <= 0 or gt[0, 3] <= 0:
        raise ValueError(f'{path}: the first ground-truth row {gt[0].tolist()} is not a valid '
                         'box; trackers are started from it')
    return Sequence(name=path.name, frames=frames, gt=gt)


def list_sequences(root: PathLike, names: Optional[Iterable[str]] = None) -> List[Sequence]:
    """
    Load the sequences under ``root`` (sorted by name), or only ``names`` in the given order.

    Folders that are not sequences (no ``img/`` or no ``groundtruth.txt``) are ignored when
    listing; a requested name that is not a sequence is an error naming the ones available.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f'sequence root {root} is not a folder')
    available = sorted((p.name for p in root.iterdir() if is_sequence_dir(p)), key=str.lower)
    if names is None:
        chosen = available
    else:
        chosen = list(dict.fromkeys(names))
        missing = [n for n in chosen if n not in available]
        if missing:
            raise ValueError(f'no sequence {", ".join(missing)} under {root}; available: '
                             f'{", ".join(available) or "none"}')
    if not chosen:
        raise ValueError(f'no sequences under {root} (expected <Name>/{IMAGE_DIR}/ and '
                         f'<Name>/{GROUNDTRUTH_FILE})')
    return [load_sequence(root / n) for n in chosen]


def read_frame(path: PathLike) -> np.ndarray:
    """Decode one frame as BGR uint8 HxWx3."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot decode image {path}')
    return image


def iter_frames(paths: Seq[PathLike]) -> Iterator[np.ndarray]:
    """Decode frames one at a time."""
    for p in paths:
        yield read_frame(p)


def load_frames(sequence: Sequence) -> List[np.ndarray]:
    """Decode every frame of a sequence once, so all trackers can run on the same pixels."""
    return list(iter_frames(sequence.frames))
