"""
A fast-motion set: real sequences at a fraction of their frame rate, built at run time.

Each source sequence ``<Name>`` gives ``<Name>_x<K>``: every K-th frame with its ground-truth
row, so the target and the camera move K times as far between frames as they did (a jerking
camera, a fast target, a low frame rate). It is where a tracker that takes a fast target for a
lost one shows it on data one may tune on. The frames are links to the source images (copies
where links are not possible); nothing is stored in the repository: ``python -m
siam_tracker_ros.eval.fast_set --out DIR`` writes the set (default sources: ../shared).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import sys
from typing import Callable, List, Optional, Sequence as Seq

import numpy as np

from siam_tracker_ros.eval.longterm_set import add_set_arguments, build_from_args
from siam_tracker_ros.io.sequences import (GROUNDTRUTH_FILE, IMAGE_DIR, list_sequences,
                                           Sequence)

DEFAULT_STEP = 3


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_fast_sequence(seq: Sequence, out_root, step: int) -> Path:
    """Write ``<name>_x<step>`` (every ``step``-th frame and ground-truth row); return it."""
    if step < 2:
        raise ValueError(f'step must be 2 or more (every step-th frame), got {step}')
    out = Path(out_root) / f'{seq.name}_x{step}'
    images = out / IMAGE_DIR
    if out.exists():
        shutil.rmtree(out)
    images.mkdir(parents=True)
    picked = range(0, len(seq), step)
    for k, i in enumerate(picked, start=1):
        src = seq.frames[i]
        _link(src, images / f'{k:08d}{src.suffix.lower()}')
    rows = [','.join('NaN' if np.isnan(v) else f'{v:g}' for v in seq.gt[i]) for i in picked]
    (out / GROUNDTRUTH_FILE).write_text('\n'.join(rows) + '\n')
    return out


def build_fast_set(sources, out_root, step: int = DEFAULT_STEP,
                   names: Optional[Seq[str]] = None,
                   log: Callable[[str], None] = lambda _: None) -> List[Path]:
    """Write the fast version of every source sequence (or of ``names``); return the folders."""
    made = []
    for seq in list_sequences(sources, names):
        made.append(write_fast_sequence(seq, out_root, step))
        log(f'{made[-1].name}: {len(range(0, len(seq), step))} frames')
    return made


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m siam_tracker_ros.eval.fast_set``."""
    p = argparse.ArgumentParser(
        prog='python -m siam_tracker_ros.eval.fast_set',
        description='Build the fast-motion set (every K-th frame of real sequences).')
    add_set_arguments(p, 'out/fast')
    p.add_argument('--step', type=int, default=DEFAULT_STEP,
                   help=f'keep every STEP-th frame (default {DEFAULT_STEP})')
    return p


def main(argv: Optional[Seq[str]] = None) -> int:
    """Build the set; print one line per sequence."""
    args = build_parser().parse_args(argv)
    if args.step < 2:
        print(f'error: --step must be 2 or more, got {args.step}', file=sys.stderr)
        return 2
    return build_from_args(args, lambda sources: build_fast_set(
        sources, args.out, args.step, args.seq, log=lambda m: print(m, file=sys.stderr)))


if __name__ == '__main__':
    sys.exit(main())
