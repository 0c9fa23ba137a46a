"""
OTB-style success and precision plots and a reliability diagram (PNG) from the results.

matplotlib is imported only when a plot is drawn, and only its Agg canvas is used (no pyplot,
no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence as Seq, Tuple, Union

from siam_tracker_ros.eval.metrics import (
    HIT_IOU, PRECISION_AT, PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS)

_STYLES = ['-', '--', '-.', ':']
_COLORS = ['tab:red', 'tab:blue', 'tab:green', 'tab:orange', 'tab:purple', 'tab:brown',
           'tab:pink', 'tab:gray', 'tab:olive', 'tab:cyan']


def _draw(series: List[Tuple[str, Seq[float], int]], x: Seq[float], title: str, xlabel: str,
          ylabel: str, path: Path, legend_loc: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, y, k in series:
        ax.plot(x, y, _STYLES[(k // len(_COLORS)) % len(_STYLES)],
                color=_COLORS[k % len(_COLORS)], linewidth=2, label=label)
    ax.set_xlim(min(x), max(x))
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, linestyle=':', linewidth=0.8)
    ax.legend(loc=legend_loc, fontsize='small')
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


def _reliability_panel(ax: Any, name: str, mean: Dict[str, Any]) -> None:
    block = mean['calibration']
    counts = block['counts']
    bins = len(counts)
    width = 1.0 / bins
    lefts = [k * width for k in range(bins)]
    rates = [0.0 if r is None else r for r in block['hit_rate']]
    ax.bar(lefts, rates, width=width, align='edge', color='tab:blue', alpha=0.75,
           edgecolor='black', linewidth=0.6, label='observed')
    ax.plot([0.0, 1.0], [0.0, 1.0], '--', color='tab:gray', linewidth=1.2, label='calibrated')
    dots = [(c, r) for c, r in zip(block['mean_confidence'], block['hit_rate'])
            if c is not None and r is not None]
    if dots:
        ax.plot([c for c, _ in dots], [r for _, r in dots], 'o', color='tab:red',
                markersize=4, label='mean confidence')
    for left, rate, count in zip(lefts, rates, counts):
        if count:
            ax.text(left + width / 2, rate + 0.02, str(count), rotation=90, ha='center',
                    va='bottom', fontsize=7)
    ece, brier = mean.get('ece'), mean.get('brier')
    stats = (f'ECE {ece:.3f}, Brier {brier:.3f}, {sum(counts)} frames' if ece is not None
             else 'no visible frame')
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.35)                  # room for the counts and the legend above 1
    ax.set_yticks([k / 5 for k in range(6)])
    ax.set_title(f'{name}\n{stats}', fontsize=10)
    ax.set_xlabel('confidence (bin counts above the bars)')
    ax.set_ylabel(f'observed frequency of IoU >= {HIT_IOU:g}')
    ax.grid(True, linestyle=':', linewidth=0.8)
    ax.legend(loc='upper center', ncol=3, fontsize='x-small')


def write_reliability(trackers: Dict[str, Dict[str, Any]], path: Union[str, Path],
                      title_suffix: str = '') -> Path:
    """
    Write a reliability diagram: one panel per tracker, the frames of every sequence pooled.

    Each panel shows, per confidence bin, the observed frequency of IoU >= 0.5 on visible
    frames (bars), the frame count, the bin's mean confidence and the diagonal of a
    calibrated confidence; ECE and Brier score in the corner.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blocks = [(n, b['mean']) for n, b in trackers.items() if b['mean'].get('calibration')]
    if not blocks:
        raise ValueError('no tracker has a calibration to plot')
    cols = min(len(blocks), 3)
    rows = math.ceil(len(blocks) / cols)
    fig = Figure(figsize=(4.6 * cols, 4.4 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for k, (name, mean) in enumerate(blocks):
        _reliability_panel(fig.add_subplot(rows, cols, k + 1), name, mean)
    count = max(m['sequences'] for _, m in blocks)
    fig.suptitle(f'Reliability of the confidence ({count} sequences{title_suffix})')
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


def write_plots(trackers: Dict[str, Dict[str, Any]], out_dir: Union[str, Path],
                title_suffix: str = '') -> List[Path]:
    """
    Write ``success.png``, ``precision.png`` and ``reliability.png`` for the sequence set.

    ``trackers`` is the ``trackers`` block of the evaluation JSON; each tracker's curve is its
    mean over sequences, labelled with its mean AUC / precision at 20 px and sorted best first;
    the reliability diagram is write_reliability's.
    """
    out_dir = Path(out_dir)
    order = {name: k for k, name in enumerate(trackers)}     # one colour per tracker
    ranked_auc = sorted(((n, b['mean']) for n, b in trackers.items()
                         if b['mean'].get('success_curve') is not None),
                        key=lambda item: -(item[1]['auc'] or 0.0))
    ranked_prec = sorted(((n, b['mean']) for n, b in trackers.items()
                          if b['mean'].get('precision_curve') is not None),
                         key=lambda item: -(item[1]['prec20'] or 0.0))
    if not ranked_auc:
        raise ValueError('no tracker has a success curve to plot')
    count = max(m['sequences'] for _, m in ranked_auc)
    suffix = f' ({count} sequences{title_suffix})'
    success = _draw(
        [(f'{n} [{m["auc"]:.3f}]', m['success_curve'], order[n]) for n, m in ranked_auc],
        list(SUCCESS_THRESHOLDS), 'Success plots of OPE' + suffix, 'Overlap threshold',
        'Success rate', out_dir / 'success.png', 'lower left')
    precision = _draw(
        [(f'{n} [{m["prec20"]:.3f}]', m['precision_curve'], order[n])
         for n, m in ranked_prec],
        list(PRECISION_THRESHOLDS), 'Precision plots of OPE' + suffix,
        f'Location error threshold (px); legend: precision at {PRECISION_AT:.0f} px',
        'Precision', out_dir / 'precision.png', 'lower right')
    reliability = write_reliability(trackers, out_dir / 'reliability.png', title_suffix)
    return [success, precision, reliability]
