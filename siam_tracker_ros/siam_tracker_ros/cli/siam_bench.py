"""
siam-bench: per-stage timings of the tracker on each backend, beside OpenCV's TrackerNano.

Every run tracks the same frames (a sequence folder, or a generated textured sequence) with
``SiameseTracker`` and reads its per-frame stage timings (``last_stage_ms``): crop, search
(the backend's search graph), decode (decode + selection + smoothing) and the whole step. The
template stage is the backend's ``encode_template`` on the first frame's template crop,
repeated. The first update is a warm-up and is not counted.

For NanoTrack v1/v2 models OpenCV's TrackerNano runs on the same frames with the upstream
backbone/head ONNX files (from the model directory when its layout is backbone/head, or from
``--peer-model DIR``); its whole ``update()`` is its step.

JSON: ``{"runs": [{"model", "backend", "device", "frames", "stages_ms": {STAGE: {"p50",
"p99", ...}}}], "host": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import BackendError
from ..core.crop import to_blob
from ..core.manifest import ModelError, ModelSpec
from ..core.types import BBox
from ..eval.metrics import timing_stats

STAGES = ('crop', 'template', 'search', 'decode', 'step')


def load_frames(sequence: Optional[str], count: int,
                seed: int = 0) -> Tuple[List[np.ndarray], BBox, str]:
    """Up to ``count`` frames and the first box: a sequence folder or a generated sequence."""
    if count < 2:
        raise ValueError('--frames must be at least 2 (one init frame, one tracked frame)')
    if sequence:
        from ..io.sequences import load_sequence, read_frame
        seq = load_sequence(sequence)
        frames = [read_frame(p) for p in seq.frames[:count]]
        return frames, seq.init_box, f'sequence {seq.name} ({len(frames)} frames)'
    from ..eval.synthetic import moving_target
    seq = moving_target(frames=count, seed=seed)
    return (list(seq.frames), BBox.from_sequence(seq.boxes[0]),
            f'generated moving-target sequence ({count} frames)')


def bench_tracker(spec: ModelSpec, backend, frames: Sequence[np.ndarray], box: BBox,
                  template_reps: int = 20) -> Dict[str, Dict[str, float]]:
    """Stage timings (ms) of SiameseTracker over ``frames`` on ``backend``."""
    from ..core.tracker import SiameseTracker
    tracker = SiameseTracker(spec, backend)
    tracker.init(frames[0], box)
    times: Dict[str, List[float]] = {s: [] for s in STAGES}
    blob = to_blob(tracker.template_crop(frames[0], tracker.center, tracker.size))
    backend.encode_template(blob)  # warm-up
    for _ in range(max(1, template_reps)):
        t0 = time.perf_counter()
        backend.encode_template(blob)
        times['template'].append((time.perf_counter() - t0) * 1e3)
    for i, frame in enumerate(frames[1:]):
        tracker.update(frame)
        if i == 0:
            continue  # warm-up
        st = tracker.last_stage_ms
        times['crop'].append(st['crop'])
        times['search'].append(st['network'])
        times['decode'].append(st['decode'])
        times['step'].append(st['step'])
    return {stage: timing_stats(v) for stage, v in times.items()}


def nano_peer_files(spec: ModelSpec, peer_model: Optional[str]) -> Tuple[Path, Path]:
    """Backbone and head ONNX for OpenCV's TrackerNano: --peer-model, else the model's own."""
    from ..eval.peers import PeerUnavailable, nano_model_files
    if peer_model:
        return nano_model_files(peer_model)
    if spec.layout == 'backbone_head':
        return spec.path('backbone'), spec.path('head')
    raise PeerUnavailable(f'{spec.name} has layout {spec.layout}; TrackerNano needs the '
                          'upstream backbone/head ONNX pair: pass --peer-model DIR')


def nano_version(spec: ModelSpec) -> Optional[int]:
    """1/2/3 for a NanoTrack model, else None."""
    if spec.family != 'nanotrack' or not spec.arch.startswith('nanotrack_v'):
        return None
    try:
        return int(spec.arch.rsplit('v', 1)[1])
    except ValueError:
        return None


def bench_nano_peer(backbone: Path, head: Path, frames: Sequence[np.ndarray],
                    box: BBox) -> Dict[str, Dict[str, float]]:
    """Time OpenCV TrackerNano's update() (ms) over ``frames``."""
    import cv2
    from ..eval.peers import OpenCVPeer, PeerUnavailable
    if not hasattr(cv2, 'TrackerNano') or not hasattr(cv2, 'TrackerNano_Params'):
        raise PeerUnavailable(f'OpenCV {cv2.__version__} has no TrackerNano')

    def create():
        params = cv2.TrackerNano_Params()
        params.backbone = str(backbone)
        params.neckhead = str(head)
        log = getattr(getattr(cv2, 'utils', None), 'logging', None)
        level = log.getLogLevel() if log else None
        if log:  # OpenCV 5 warns about dnn targets on every creation
            log.setLogLevel(log.LOG_LEVEL_ERROR)
        try:
            return cv2.TrackerNano.create(params)
        finally:
            if log:
                log.setLogLevel(level)

    peer = OpenCVPeer('opencv-nano', create, has_score=True)
    try:
        peer.init(frames[0], box)
    except cv2.error as exc:
        raise PeerUnavailable(f'TrackerNano cannot load {backbone.name}/{head.name}: '
                              f'{exc}') from None
    steps: List[float] = []
    for i, frame in enumerate(frames[1:]):
        t0 = time.perf_counter()
        peer.update(frame)
        if i:
            steps.append((time.perf_counter() - t0) * 1e3)
    return {'step': timing_stats(steps)}


def host_info() -> Dict[str, object]:
    """CPU, core count and library versions of this machine."""
    import cv2
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.lower().startswith(('model name', 'hardware')):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    info: Dict[str, object] = {'cpu': cpu, 'cores': os.cpu_count(), 'python':
                               platform.python_version(), 'opencv': cv2.__version__}
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of siam-bench."""
    p = argparse.ArgumentParser(prog='siam-bench', description=__doc__.strip().split('\n')[0])
    p.add_argument('--model', action='append', required=True,
                   help='model directory or upstream NanoTrack folder (repeatable)')
    p.add_argument('--backend', action='append', choices=['onnxruntime', 'torch', 'tensorrt'],
                   help='backend to time (repeatable; default onnxruntime)')
    p.add_argument('--device', default=None,
                   help='device (default cpu; cuda for tensorrt)')
    p.add_argument('--frames', type=int, default=100, help='frames to track (default '
                   '%(default)s, first one is the init frame)')
    p.add_argument('--sequence', help='sequence folder (img/ + groundtruth.txt); default: a '
                   'generated textured moving-target sequence')
    p.add_argument('--template-reps', type=int, default=20,
                   help='template encodings to time (default %(default)s)')
    p.add_argument('--peer-model', help='NanoTrack v1/v2 folder with the upstream backbone/head '
                   'ONNX for OpenCV TrackerNano')
    p.add_argument('--no-peer', action='store_true', help='do not run OpenCV TrackerNano')
    p.add_argument('--json', help='write the results here')
    return p


def _print_run(run: Dict[str, object]) -> None:
    stages = run['stages_ms']
    cells = '  '.join(f'{s} {stages[s]["p50"]:7.2f}/{stages[s]["p99"]:7.2f}'
                      for s in STAGES if s in stages)
    print(f'{run["model"]:<28} {run["backend"]:<12} {run["device"]:<8} {cells}')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    from ..backends.registry import create_backend
    from ..eval.peers import PeerUnavailable
    from ..factory import resolve_model
    backends = args.backend or ['onnxruntime']
    try:
        frames, box, source = load_frames(args.sequence, args.frames)
    except (ValueError, OSError) as exc:
        print(f'siam-bench: error: {exc}', file=sys.stderr)
        return 1
    print(f'siam-bench on {source}; times in ms as p50/p99 (first update not counted)')
    runs: List[Dict[str, object]] = []
    skipped: List[Dict[str, str]] = []
    failed = False
    for model in args.model:
        try:
            spec = resolve_model(model)
        except ModelError as exc:
            print(f'siam-bench: error: {exc}', file=sys.stderr)
            return 1
        for name in backends:
            device = args.device or ('cuda' if name == 'tensorrt' else 'cpu')
            try:
                backend = create_backend(name, spec, device=device)
            except BackendError as exc:
                print(f'  {spec.name} on {name}: skipped: {exc}')
                skipped.append({'model': spec.name, 'backend': name, 'reason': str(exc)})
                failed = True
                continue
            stages = bench_tracker(spec, backend, frames, box, args.template_reps)
            run = {'model': spec.name, 'arch': spec.arch, 'backend': name,
                   'device': getattr(backend, 'device', device), 'frames': len(frames),
                   'stages_ms': stages}
            runs.append(run)
            _print_run(run)
        version = nano_version(spec)
        if version in (1, 2) and not args.no_peer:
            try:
                backbone, head = nano_peer_files(spec, args.peer_model)
                peer = {'model': f'{spec.name} (OpenCV TrackerNano)', 'arch': spec.arch,
                        'backend': 'opencv-nano', 'device': 'cpu', 'frames': len(frames),
                        'stages_ms': bench_nano_peer(backbone, head, frames, box)}
                runs.append(peer)
                _print_run(peer)
                ours = [r for r in runs if r['model'] == spec.name]
                if ours:
                    print('  side by side, whole step p50: ' + ', '.join(
                        f'ours/{r["backend"]} {r["stages_ms"]["step"]["p50"]:.2f} ms'
                        for r in ours) + f' vs TrackerNano '
                        f'{peer["stages_ms"]["step"]["p50"]:.2f} ms')
            except PeerUnavailable as exc:
                print(f'  OpenCV TrackerNano: skipped: {exc}')
                skipped.append({'model': spec.name, 'backend': 'opencv-nano',
                                'reason': str(exc)})
    result = {'runs': runs, 'skipped': skipped, 'frames_from': source, 'host': host_info()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
        print(f'wrote {args.json}')
    if not runs:
        return 3 if failed else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
