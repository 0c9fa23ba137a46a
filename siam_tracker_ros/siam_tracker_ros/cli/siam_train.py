r"""
siam-train: fine-tune a NanoTrack model (and the learned modules) on tracking sequences.

Example::

    siam-train siam_tracker_ros/config/train/nanotrack_v3_cpu.yaml --out out/train-v3 \
        --set optim.lr=0.001 --set modules.st_fusion=true

The YAML file holds the settings of ``train.config.TrainConfig`` (model, data sources, pair
sampling, optimiser, losses, learned modules, validation); ``--set`` overrides one of them.
The run writes ``train_log.csv`` (every loss term per step), ``val_log.csv`` (validation AUC
of the real tracker), TensorBoard scalars, resumable checkpoints and the final ``model.pth``
(base network, loads strictly with ``nets.registry.load_weights``) and ``modules.pth`` into
the output folder; progress goes to stderr and a summary to stdout.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence as Seq


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of siam-train."""
    p = argparse.ArgumentParser(
        prog='siam-train',
        description='Fine-tune NanoTrack (v1/v2/v3) and the learned modules on GOT-10k, LaSOT '
                    'or <Name>/img + groundtruth.txt sequences; validate with the tracker.')
    p.add_argument('config', nargs='?', default=None,
                   help='training configuration (YAML); omitted: the defaults plus --set')
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='KEY=VALUE',
                   help='override a setting, e.g. optim.lr=0.001, steps=200, '
                        'modules.st_fusion=true (value parsed as YAML); may be repeated')
    p.add_argument('--out', default=None, metavar='DIR',
                   help='output folder (default: out_dir of the configuration)')
    p.add_argument('--resume', default=None, metavar='CKPT',
                   help="continue from a siam-train checkpoint, or 'auto' for the latest one "
                        'in the output folder')
    p.add_argument('--overwrite', action='store_true',
                   help='start afresh in an output folder that already holds a run')
    p.add_argument('--device', default=None,
                   help='cpu, cuda or cuda:N (overrides the configuration)')
    p.add_argument('--steps', type=int, default=None, help='overrides steps')
    p.add_argument('--quiet', action='store_true', help='no progress on stderr')
    p.add_argument('--curves', default=None, metavar='PNG',
                   help='instead of training, draw the learning curves of the --run folders '
                        'into one PNG (an ablation)')
    p.add_argument('--run', dest='runs', action='append', default=[], metavar='[LABEL=]DIR',
                   help='a finished run folder for --curves (label: the folder name unless '
                        'given); may be repeated')
    return p


def draw_curves(png: str, runs: Seq[str]) -> str:
    """Overlay the learning curves of ``runs`` ('[LABEL=]DIR') into ``png``; its path."""
    from pathlib import Path

    from siam_tracker_ros.train.curves import write_learning_curves

    if not runs:
        raise ValueError('--curves needs at least one --run DIR')
    folders = {}
    for spec in runs:
        label, _, folder = spec.rpartition('=')
        folders[label or Path(folder).name] = folder
    return str(write_learning_curves(folders, png))


def main(argv: Optional[Seq[str]] = None) -> int:
    """Run siam-train; returns the process exit status."""
    args = build_parser().parse_args(argv)

    def fail(message: str, status: int = 1) -> int:
        print(f'siam-train: error: {message}', file=sys.stderr)
        return status

    if args.curves:
        try:
            print(f'learning curves: {draw_curves(args.curves, args.runs)}')
        except (ValueError, OSError) as exc:
            return fail(str(exc), 2)
        return 0

    try:
        import torch  # noqa: F401
    except ImportError:
        return fail('siam-train needs PyTorch (pip install torch)', 2)
    from siam_tracker_ros.core.manifest import ModelError
    from siam_tracker_ros.train.config import ConfigError, load_config
    from siam_tracker_ros.train.trainer import train

    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f'device={args.device}')
    if args.steps is not None:
        overrides.append(f'steps={args.steps}')
    try:
        cfg = load_config(args.config, overrides)
        result = train(cfg, out_dir=args.out, resume=args.resume, progress=not args.quiet,
                       overwrite=args.overwrite)
    except (ConfigError, ModelError) as exc:
        return fail(str(exc), 2)
    except (ValueError, RuntimeError, OSError) as exc:
        return fail(str(exc))
    last = result.losses[-1] if result.losses else {}
    print(f'siam-train: {result.step} steps in {result.out_dir}; last loss '
          f'{last.get("loss", float("nan")):.4f}; {result.seconds_per_step:.3f} s/step '
          f'(median)')
    if result.val:
        first, final = result.val[0], result.val[-1]
        print(f'validation AUC: step {first["step"]} {first["auc"]:.3f} -> step '
              f'{final["step"]} {final["auc"]:.3f}')
    print(f'weights: {result.weights} (base network), {result.modules} (learned modules)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
