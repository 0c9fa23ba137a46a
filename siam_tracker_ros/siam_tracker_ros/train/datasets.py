"""
Training data readers: GOT-10k, LaSOT and this project's sequence folders.

Each reader returns ``io.sequences.Sequence`` objects (frame paths plus an ``(N, 4)`` x, y, w, h
array). A frame whose target is not visible gets a NaN row: absent in GOT-10k
(``absence.label``), fully occluded or out of view in LaSOT (``full_occlusion.txt``,
``out_of_view.txt``), a NaN row in a sequence folder, or a box without area. The pair sampler
never uses such frames as a template or as a positive search frame.

Boxes are read as the data sets write them (pysot and pytracking read GOT-10k and LaSOT boxes
unchanged).

Layouts:

* GOT-10k: ``<root>/train/<seq>/*.jpg`` + ``groundtruth.txt`` + ``absence.label`` (``<root>``
  may also be the split folder itself; its ``list.txt`` gives the order where present);
* LaSOT: ``<root>/<class>/<class>-N/img/*.jpg`` + ``groundtruth.txt`` + ``full_occlusion.txt``
  + ``out_of_view.txt`` (``names`` may list sequences, ``airplane-1``, or whole classes);
* sequences: ``<root>/<Name>/img/*.jpg`` + ``groundtruth.txt`` (``io.sequences``).
"""
from __future__ import annotations

from pathlib import Path
import re
from typing import Callable, Dict, List, Sequence as Seq, Union

import numpy as np

from .config import DataSource
from ..io.sequences import (GROUNDTRUTH_FILE, IMAGE_DIR, list_frames, list_sequences,
                            natural_key, read_groundtruth, Sequence)

PathLike = Union[str, Path]


def read_flags(path: PathLike, count: int) -> np.ndarray:
    """
    Read a per-frame 0/1 flag file (one value per line, or comma separated on one line).

    A missing file means no frame is flagged; a file with another count of values is an error.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros(count, dtype=bool)
    values = [v for v in re.split(r'[,\s]+', path.read_text().strip()) if v]
    if len(values) != count:
        raise ValueError(f'{path}: {len(values)} flags for {count} frames; write one 0/1 per '
                         'frame')
    try:
        return np.array([int(float(v)) != 0 for v in values], dtype=bool)
    except ValueError:
        raise ValueError(f'{path}: flags must be 0 or 1') from None


def visible_mask(gt: np.ndarray) -> np.ndarray:
    """Frames whose box is finite and has an area."""
    with np.errstate(invalid='ignore'):
        return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def _make(name: str, frames: Seq[Path], gt: np.ndarray, hidden: np.ndarray,
          max_frames: int, folder: Path) -> Sequence:
    if len(frames) != len(gt):
        raise ValueError(f'{folder}: {len(frames)} images but {len(gt)} ground-truth rows')
    gt = gt.copy()
    gt[hidden | ~visible_mask(gt)] = np.nan
    if max_frames:
        frames, gt = frames[:max_frames], gt[:max_frames]
    return Sequence(name=name, frames=tuple(frames), gt=gt)


def _select(available: List[str], names: Seq[str], root: Path) -> List[str]:
    if not names:
        return available
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f'no sequence {", ".join(missing)} under {root}; there are '
                         f'{len(available)} (e.g. {", ".join(available[:5]) or "none"})')
    return list(dict.fromkeys(names))


def read_got10k(root: PathLike, names: Seq[str] = (), max_frames: int = 0) -> List[Sequence]:
    """Read GOT-10k sequences (``<root>/train/<seq>`` or ``<root>/<seq>``)."""
    root = Path(root)
    split = root / 'train' if (root / 'train').is_dir() else root
    if not split.is_dir():
        raise ValueError(f'GOT-10k root {root} is not a folder')
    listed = split / 'list.txt'
    if listed.is_file():
        available = [n.strip() for n in listed.read_text().splitlines() if n.strip()]
    else:
        available = sorted((p.name for p in split.iterdir()
                            if (p / GROUNDTRUTH_FILE).is_file()), key=natural_key)
    out = []
    for name in _select(available, names, split):
        folder = split / name
        frames = list_frames(folder)
        gt = read_groundtruth(folder / GROUNDTRUTH_FILE)
        absent = read_flags(folder / 'absence.label', len(gt))
        out.append(_make(name, frames, gt, absent, max_frames, folder))
    if not out:
        raise ValueError(f'no GOT-10k sequences under {split} (expected <seq>/*.jpg and '
                         f'<seq>/{GROUNDTRUTH_FILE})')
    return out


def read_lasot(root: PathLike, names: Seq[str] = (), max_frames: int = 0) -> List[Sequence]:
    """Read LaSOT sequences (``<root>/<class>/<class>-N``); ``names`` may name classes."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f'LaSOT root {root} is not a folder')
    folders = {p.name: p for c in sorted(root.iterdir()) if c.is_dir()
               for p in c.iterdir() if (p / GROUNDTRUTH_FILE).is_file()
               and (p / IMAGE_DIR).is_dir()}
    available = sorted(folders, key=natural_key)
    classes = {n.rsplit('-', 1)[0] for n in available}
    wanted = []
    for n in names:
        wanted += [s for s in available if s.rsplit('-', 1)[0] == n] if n in classes else [n]
    out = []
    for name in _select(available, wanted, root):
        folder = folders[name]
        frames = list_frames(folder / IMAGE_DIR)
        gt = read_groundtruth(folder / GROUNDTRUTH_FILE)
        hidden = (read_flags(folder / 'full_occlusion.txt', len(gt))
                  | read_flags(folder / 'out_of_view.txt', len(gt)))
        out.append(_make(name, frames, gt, hidden, max_frames, folder))
    if not out:
        raise ValueError(f'no LaSOT sequences under {root} (expected <class>/<class>-N/'
                         f'{IMAGE_DIR}/ and {GROUNDTRUTH_FILE})')
    return out


def read_sequence_folders(root: PathLike, names: Seq[str] = (),
                          max_frames: int = 0) -> List[Sequence]:
    """Read this project's sequence folders (``<root>/<Name>/img`` + ``groundtruth.txt``)."""
    out = []
    for seq in list_sequences(root, names or None):
        out.append(_make(seq.name, seq.frames, seq.gt, np.zeros(len(seq), bool), max_frames,
                         Path(root) / seq.name))
    return out


READERS: Dict[str, Callable[..., List[Sequence]]] = {
    'sequences': read_sequence_folders,
    'got10k': read_got10k,
    'lasot': read_lasot,
}


def load_source(source: DataSource) -> List[Sequence]:
    """Read the sequences of one configured source (errors name the folder)."""
    if source.kind not in READERS:
        raise ValueError(f'unknown data kind {source.kind!r}; choose one of {sorted(READERS)}')
    return READERS[source.kind](source.root, source.names, source.max_frames)
