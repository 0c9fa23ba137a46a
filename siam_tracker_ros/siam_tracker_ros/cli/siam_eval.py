r"""
siam-eval: one-pass evaluation of our tracker and OpenCV's trackers on sequence folders.

Example::

    siam-eval --model ../shared/reference-models/nanotrack-v2 --sequences ../shared/sequences \
        --peers opencv-nano,opencv-csrt,opencv-kcf,opencv-mil \
        --peer-model ../shared/reference-models/nanotrack-v2 --json out/eval.json --plots out/

Writes the results as JSON, optional OTB-style plots, and prints a summary table on stdout.
Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import datetime
from importlib import metadata
import json
import os
from pathlib import Path
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence as Seq, Tuple

from siam_tracker_ros.core.config import preset, PRESETS

PEER_HELP = ('comma separated peers: opencv-nano, opencv-mil, opencv-csrt, opencv-kcf; '
             'KIND@DIR gives that peer its own model folder (for example '
             'opencv-nano@../shared/reference-models/nanotrack-v1); may be repeated')

FPS_NOTE = ('fps: frames per second of update() alone (time.perf_counter around each call, '
            'image decoding excluded, first frame excluded); per tracker the mean block gives '
            'fps = median over sequences of the per-sequence fps and fps_mean = their mean')


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of siam-eval."""
    p = argparse.ArgumentParser(
        prog='siam-eval',
        description='One-pass evaluation (OTB/GOT-10k/LaSOT metrics) of our tracker and '
                    'OpenCV peer trackers on <Name>/img/*.jpg + groundtruth.txt sequences.')
    p.add_argument('--model', default=None,
                   help='our model: a product model folder (manifest.json) or an upstream '
                        "NanoTrack folder; 'none' or omitted evaluates the peers only")
    p.add_argument('--sequences', required=True, metavar='ROOT', nargs='+',
                   help='folder(s) holding <Name>/img/*.jpg and <Name>/groundtruth.txt')
    p.add_argument('--seq', nargs='+', action='extend', default=None, metavar='NAME',
                   help='evaluate only these sequences (default: every one under ROOT)')
    p.add_argument('--peers', action='append', default=None, metavar='LIST', help=PEER_HELP)
    p.add_argument('--peer-model', default=None, metavar='DIR',
                   help='NanoTrack v1/v2 folder (nanotrack_backbone_sim.onnx, '
                        'nanotrack_head_sim.onnx) for opencv-nano')
    p.add_argument('--backend', default='auto',
                   help='inference backend for our tracker: auto, onnxruntime, torch, tensorrt '
                        '(default auto)')
    p.add_argument('--device', default='cpu', help='device for our tracker (default cpu)')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default',
                   help="tracker policy preset for our tracker: plain = the authors' tracking "
                        'step; default = with template update, confidence, re-detection and '
                        'distractor memory (default %(default)s)')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='tracker configuration override for our tracker (applied after '
                        '--preset); may be repeated')
    p.add_argument('--threads', type=int, default=None, metavar='N',
                   help='threads for every tracker in this process: cv2.setNumThreads(N) and '
                        "ONNX Runtime's intra-op threads of ours; default: each library's own "
                        '(all cores up to 4)')
    p.add_argument('--repeats', type=int, default=1, metavar='N',
                   help='also run every tracker from N-1 initial boxes moved by up to '
                        '--jitter pixels and report the mean and spread of the set AUC '
                        '(Siamese trackers are chaotic: one run is one draw); default 1')
    p.add_argument('--jitter', type=float, default=0.3, metavar='PX',
                   help='largest shift of those initial boxes in x and y (default 0.3 px)')
    p.add_argument('--json', required=True, metavar='OUT', help='where to write the results')
    p.add_argument('--plots', default=None, metavar='DIR',
                   help='write success.png, precision.png and reliability.png (confidence '
                        'against IoU >= 0.5) here')
    p.add_argument('--save-boxes', action='store_true',
                   help='also store per-frame boxes, found flags, scores and confidences')
    p.add_argument('--quiet', action='store_true', help='no progress on stderr')
    p.add_argument('--fit-confidence', default=None, metavar='OUT',
                   help="first fit our tracker's confidence (logistic coefficients of "
                        'P(IoU >= 0.5), eval/confidence_fit.py) on these sequences and '
                        'starts, write the fit to OUT (JSON), then evaluate with it')
    return p


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ('true', 'false'):
        return low == 'true'
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if ',' in text:
        try:
            return tuple(float(v) for v in text.split(','))
        except ValueError:
            pass
    return text


def parse_overrides(items: Seq[str]) -> Dict[str, Any]:
    """
    Turn ``KEY=VALUE`` strings into keyword arguments.

    Values become ints, floats, booleans, tuples of floats (numbers separated by commas) or
    strings.
    """
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise ValueError(f'--set expects KEY=VALUE, got {item!r}')
        out[key.strip()] = _parse_value(value.strip())
    return out


def parse_peers(values: Optional[Seq[str]], default_model: Optional[str]
                ) -> List[Tuple[str, str, Optional[str]]]:
    """(name, kind, model folder) for every peer asked for, in order, without duplicates."""
    from siam_tracker_ros.eval.peers import parse_peer_spec

    specs: List[Tuple[str, str, Optional[str]]] = []
    seen = set()
    for value in values or []:
        for spec in value.split(','):
            if not spec.strip():
                continue
            parsed = parse_peer_spec(spec, default_model)
            if parsed[0] in seen:
                continue
            seen.add(parsed[0])
            specs.append(parsed)
    return specs


def _version(*dists: str) -> Optional[str]:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu_count() -> Dict[str, Optional[int]]:
    usable = None
    if hasattr(os, 'sched_getaffinity'):
        usable = len(os.sched_getaffinity(0))
    return {'cpu_count': os.cpu_count(), 'cpu_usable': usable}


def _load_ours(args: argparse.Namespace, overrides: Dict[str, Any]):
    from siam_tracker_ros.factory import load_tracker
    options = {}
    if args.threads and args.device == 'cpu' and args.backend in ('auto', 'onnxruntime'):
        options['threads'] = args.threads
    return load_tracker(args.model, backend=args.backend, device=args.device,
                        backend_options=options, **overrides)


def _sequences(roots: Seq[str], names: Optional[Seq[str]]) -> list:
    """Return the sequences under every root (all, or only ``names``, in that order)."""
    from siam_tracker_ros.io.sequences import list_sequences

    if len(roots) == 1:
        return list_sequences(roots[0], names)
    found = [s for root in roots for s in list_sequences(root)]
    if names is None:
        return found
    by_name = {s.name: s for s in found}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f'no sequence {", ".join(missing)} under {", ".join(roots)}')
    return [by_name[n] for n in dict.fromkeys(names)]


def _tracker_config(tracker: Any) -> Any:
    config = getattr(tracker, 'config', None)
    if config is not None and hasattr(config, 'flat'):
        return json.loads(json.dumps(config.flat(), default=str))
    return None


def main(argv: Optional[Seq[str]] = None) -> int:
    """Run siam-eval; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)

    import cv2

    from siam_tracker_ros.eval.peers import create_peer, PeerUnavailable
    from siam_tracker_ros.eval.runner import (
        format_table, OURS, Progress, run_evaluation, thresholds_record, TrackerEntry)

    def fail(message: str, status: int = 1) -> int:
        print(f'siam-eval: error: {message}', file=sys.stderr)
        return status

    progress = Progress(enabled=not args.quiet)
    try:
        user_overrides = parse_overrides(args.overrides)
        overrides = {**preset(args.preset), **user_overrides}
        peer_specs = parse_peers(args.peers, args.peer_model)
        sequences = _sequences(args.sequences, args.seq)
    except ValueError as exc:
        return fail(str(exc), 2)
    use_ours = args.model is not None and args.model.lower() != 'none'
    if not use_ours and user_overrides:
        return fail('--set applies to our tracker; give --model', 2)
    if args.threads is not None and args.threads < 0:
        return fail('--threads must be >= 0', 2)
    if args.repeats < 1 or args.jitter < 0:
        return fail('--repeats must be >= 1 and --jitter >= 0', 2)

    threads_default = cv2.getNumThreads()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)

    entries: List[TrackerEntry] = []
    skipped: Dict[str, str] = {}
    ours_info: Optional[Dict[str, Any]] = None
    if use_ours:
        try:
            tracker = _load_ours(args, overrides)
        except Exception as exc:  # noqa: B902 - any loading failure is reported, not raised
            return fail(f'cannot load our tracker from {args.model}: {exc}')
        if args.fit_confidence:
            from siam_tracker_ros.eval.confidence_fit import collect, fit, set_arguments

            rows, labels = collect(lambda: tracker, sequences, args.repeats, args.jitter,
                                   progress.message)
            try:
                fitted = fit(rows, labels)
            except ValueError as exc:
                return fail(f'cannot fit the confidence: {exc}')
            fitted['set'] = set_arguments(fitted)
            fitted['sequences'] = [s.name for s in sequences]
            Path(args.fit_confidence).parent.mkdir(parents=True, exist_ok=True)
            Path(args.fit_confidence).write_text(json.dumps(fitted, indent=1) + '\n')
            coefficients = {k: tuple(m['coefficients']) for k, m in fitted['models'].items()}
            tracker.record_cues = False
            tracker.set_config(tracker.config.replace(**coefficients))
            overrides = {**overrides, **coefficients}
            for key, model in fitted['models'].items():
                progress.message(f'siam-eval: fitted {key} on {model["frames"]} frames: '
                                 f'Brier {model["brier"]:.3f}, AUROC {model["auroc"]:.3f}')
            progress.message(f'siam-eval: fit written to {args.fit_confidence}; use it with '
                             + ' '.join(f'--set {a}' for a in fitted['set']))
        entries.append(TrackerEntry(OURS, lambda: tracker))
        ours_info = {'model': args.model, 'backend': args.backend, 'device': args.device,
                     'preset': args.preset, 'overrides': overrides,
                     'tracker_config': _tracker_config(tracker)}
    peer_models: Dict[str, Optional[str]] = {}
    for name, kind, model in peer_specs:
        try:
            create_peer(kind, model, name)
        except PeerUnavailable as exc:
            skipped[name] = str(exc)
            progress.message(f'siam-eval: skipping peer {name}: {exc}')
            continue
        peer_models[name] = model
        entries.append(TrackerEntry(
            name, lambda kind=kind, model=model, name=name: create_peer(kind, model, name)))
    if not entries:
        return fail('nothing to evaluate: give --model and/or --peers (skipped: '
                    f'{"; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none"})', 2)

    progress.message(f'siam-eval: {len(sequences)} sequence(s), trackers: '
                     f'{", ".join(e.name for e in entries)}')
    try:
        trackers = run_evaluation(sequences, entries, progress, save_boxes=args.save_boxes,
                                  repeats=args.repeats, jitter=args.jitter)
    except (RuntimeError, ValueError) as exc:
        return fail(str(exc))

    if OURS in trackers and trackers[OURS]['mean']['fps']:
        ours_fps = trackers[OURS]['mean']['fps']
        for name, block in trackers.items():
            fps = block['mean']['fps']
            block['mean']['ours_fps_ratio'] = ours_fps / fps if fps else None

    config = {
        'args': dict(vars(args)),
        'sequences_root': [str(Path(root).resolve()) for root in args.sequences],
        'sequences': [s.name for s in sequences],
        'ours': ours_info,
        'peers': {name: {'model': model} for name, model in peer_models.items()},
        'peers_skipped': skipped,
        'fps_definition': FPS_NOTE,
        'metrics': ('first frame excluded; frames with NaN ground truth excluded from IoU and '
                    'centre error; auc = mean success over 21 IoU thresholds (IoU > t); '
                    'prec20 = share of centre errors <= 20 px; norm_prec = mean of the LaSOT '
                    'normalised precision curve over 0..0.5; presence_* = precision/recall/F1 '
                    "of the tracker's found verdict where the ground truth has absent frames; "
                    'conf_auroc = AUROC of confidence, visible vs absent frames; '
                    'false_lost = visible frames the tracker reports not found (state not '
                    'TRACKING), false_lost_rate = that over visible frames; held_frames = '
                    'frames not found whose box equals that of the frame before, longest_hold = '
                    'the longest run of them; calibration = confidence of visible frames in '
                    'bins (calibration_bins) against IoU >= 0.5: frame counts, mean '
                    'confidence, hit rate; ece = sum over bins of count/N * |hit rate - mean '
                    'confidence|; brier = mean (confidence - hit)^2; mean block: mean over '
                    'sequences (presence, AUROC and false_lost_rate over the sequences where '
                    'they apply), false_lost and held_frames summed, longest_hold the '
                    'longest, calibration / ece / brier pooled over the frames of all '
                    'sequences'),
        'thresholds': thresholds_record(),
        'versions': {
            'python': platform.python_version(),
            'numpy': _version('numpy'),
            'opencv': cv2.__version__,
            'onnxruntime': _version('onnxruntime', 'onnxruntime-gpu'),
            'torch': _version('torch'),
        },
        'cv2_threads_default': threads_default,
        'cv2_threads': cv2.getNumThreads(),
        **_cpu_count(),
        'platform': platform.platform(),
        'machine': platform.machine(),
        'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    result = {'trackers': trackers, 'config': config}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=False) + '\n')

    plot_paths = []
    if args.plots:
        from siam_tracker_ros.eval.plots import write_plots

        plot_paths = write_plots(trackers, args.plots)

    print(format_table(trackers))
    print(f'\n{FPS_NOTE}.')
    for name, reason in skipped.items():
        print(f'skipped {name}: {reason}')
    print(f'results: {out}')
    for path in plot_paths:
        print(f'plot: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
