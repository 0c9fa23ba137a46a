"""
Learning curves (PNG) of one or several siam-train runs, read back from their CSV logs.

Left: the training loss per step, smoothed by a running mean (single steps of a small batch
are noisy); right: the validation AUC of the real tracker at each validation. Several runs
(an ablation) share the axes. matplotlib's Agg canvas only (no pyplot, no display).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Mapping, Union

import numpy as np

from .trainer import LOG_NAME, VAL_LOG_NAME

PathLike = Union[str, Path]
SMOOTH_STEPS = 50


def read_log(path: Path) -> Dict[str, np.ndarray]:
    """Return the columns of a siam-train CSV log as float arrays (empty when it is absent)."""
    if not path.is_file():
        return {}
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each index (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def write_learning_curves(runs: Mapping[str, PathLike], path: PathLike,
                          smooth: int = SMOOTH_STEPS) -> Path:
    """Draw the loss and validation-AUC curves of ``runs`` (label -> run folder) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    logs = {label: (read_log(Path(d) / LOG_NAME), read_log(Path(d) / VAL_LOG_NAME))
            for label, d in runs.items()}
    missing: List[str] = [label for label, (train, _) in logs.items() if 'loss' not in train]
    if missing:
        raise ValueError(f'no {LOG_NAME} with a loss column in the run(s) of '
                         f'{", ".join(missing)}')
    fig = Figure(figsize=(11.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, auc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for k, (label, (train, val)) in enumerate(logs.items()):
        color = f'C{k % 10}'
        loss_ax.plot(train['step'], running_mean(train['loss'], smooth), color=color,
                     linewidth=1.5, label=label)
        if 'auc' in val:
            auc_ax.plot(val['step'], val['auc'], 'o-', color=color, linewidth=1.5,
                        label=label)
    loss_ax.set_title(f'training loss (running mean of {smooth} steps)')
    loss_ax.set_xlabel('step')
    loss_ax.set_ylabel('loss')
    auc_ax.set_title('validation AUC (real tracker, held-out sequences)')
    auc_ax.set_xlabel('step')
    auc_ax.set_ylabel('AUC')
    for ax in (loss_ax, auc_ax):
        ax.grid(True, linestyle=':', linewidth=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize='small')
        else:
            ax.text(0.5, 0.5, 'no validation in these runs', ha='center',
                    transform=ax.transAxes)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out))
    return out
