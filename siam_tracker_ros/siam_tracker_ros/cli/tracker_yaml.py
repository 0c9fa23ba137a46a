"""
Keep config/tracker.yaml's commented ``tracker:`` block in step with TrackerConfig.

``python -m siam_tracker_ros.cli.tracker_yaml [PATH]`` rewrites the block (every field with its
description, range and default) after the ``# tracker:`` line; everything above it is kept.
A test checks that the shipped file is what this writes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys
import textwrap
from typing import Optional, Sequence

from siam_tracker_ros.core.config import describe, TrackerConfig

MARKER = '    # tracker:\n'
WIDTH = 98
DEFAULT_PATH = Path(__file__).resolve().parents[2] / 'config' / 'tracker.yaml'


def yaml_value(default) -> str:
    """How a default is written in the YAML file (booleans lower-case, tuples as lists)."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return '[' + ', '.join(repr(v) for v in default) + ']'
    return repr(default)


def render(text: str) -> str:
    """``text`` (a tracker.yaml) with its tracker block regenerated from TrackerConfig."""
    if MARKER not in text:
        raise ValueError(f'no {MARKER.strip()!r} line to put the tracker settings after')
    lines = []
    for name, default, description, low, high, _ in describe(TrackerConfig):
        if low is not None or high is not None:
            description += f' [{low:g}, {high:g}]'
        lines += textwrap.wrap(description, width=WIDTH, initial_indent='    #   # ',
                               subsequent_indent='    #   # ')
        lines.append(f'    #   {name}: {yaml_value(default)}')
    return text[:text.index(MARKER) + len(MARKER)] + '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Rewrite the file (default: the package's config/tracker.yaml)."""
    parser = argparse.ArgumentParser(
        prog='python -m siam_tracker_ros.cli.tracker_yaml',
        description="Rewrite a tracker.yaml's commented tracker block from TrackerConfig.")
    parser.add_argument('path', nargs='?', type=Path, default=DEFAULT_PATH,
                        help=f'the file to rewrite (default: {DEFAULT_PATH})')
    args = parser.parse_args(argv)
    try:
        text = args.path.read_text()
    except OSError as exc:
        parser.error(f'cannot read {args.path}: {exc.strerror or exc}')
    try:
        args.path.write_text(render(text))
    except ValueError as exc:
        parser.error(f'{args.path}: {exc}')
    print(f'wrote {args.path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
