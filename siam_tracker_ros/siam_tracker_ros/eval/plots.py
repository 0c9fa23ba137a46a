"""
OTB-style success and precision plots (PNG) from the evaluation results.

matplotlib is imported only when a plot is drawn, and only its Agg canvas is used (no pyplot,
no display needed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence as Seq, Tuple, Union

from siam_tracker_ros.eval.metrics import (
    PRECISION_AT, PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS)

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


def write_plots(trackers: Dict[str, Dict[str, Any]], out_dir: Union[str, Path],
                title_suffix: str = '') -> List[Path]:
    """
    Write ``success.png`` and ``precision.png`` for the whole sequence set.

    ``trackers`` is the ``trackers`` block of the evaluation JSON; each tracker's curve is its
    mean over sequences, labelled with its mean AUC / precision at 20 px and sorted best first.
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
    return [success, precision]
