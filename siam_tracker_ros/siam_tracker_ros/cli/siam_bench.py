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

``--node`` measures the ROS node instead: tracker_node fed by a publisher process over real
DDS on a private ROS_DOMAIN_ID, at each ``--size`` (default 1280x720 and 1920x1080) x
``--transport`` x ``--profile`` x ``--publisher``, ``--rate`` Hz for ``--duration`` s
(see ``tooling/node_bench.py``). JSON: ``{"node_runs": [{"published", "processed",
"processed_ratio", "received_by_node", "missed_before_node", "skipped_in_node", "latency_ms",
"node_latency_ms", "stages_ms", "cpu", "samples", ...}], "host": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import signal
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import BackendError
from ..core.config import PRESETS
from ..core.crop import to_blob
from ..core.manifest import ModelError, ModelSpec
from ..core.types import BBox
from ..eval.metrics import timing_stats
from ..tooling import dds_profile, isolation, node_bench

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
                  template_reps: int = 20,
                  preset_name: str = 'default') -> Dict[str, Dict[str, float]]:
    """Stage timings (ms) of SiameseTracker with a preset over ``frames`` on ``backend``."""
    from ..core.config import preset
    from ..core.tracker import SiameseTracker
    tracker = SiameseTracker(spec, backend, spec.tracker.replace(**preset(preset_name)))
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
    p.add_argument('--model', action='append',
                   help='model directory or upstream NanoTrack folder (repeatable); with '
                        '--node one model, also a catalogue name (default nanotrack-v3)')
    p.add_argument('--backend', action='append', choices=['onnxruntime', 'torch', 'tensorrt'],
                   help='backend to time (repeatable; default onnxruntime)')
    p.add_argument('--device', default=None,
                   help='device (default cpu; cuda for tensorrt)')
    p.add_argument('--preset', action='append', choices=sorted(PRESETS),
                   help='tracker policy preset; repeat to compare in one run (default: default)')
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
    node = p.add_argument_group('--node: tracker_node + a publisher over DDS')
    node.add_argument('--node', action='store_true',
                      help='run tracker_node fed by a publisher process and measure frames, '
                           'latency and the per-stage breakdown')
    node.add_argument('--size', action='append', type=_size,
                      help='frame size WxH (repeatable; default 1280x720 and 1920x1080)')
    node.add_argument('--rate', type=float, default=30.0, help='Hz (default %(default)s)')
    node.add_argument('--duration', type=float, default=120.0,
                      help='seconds of each run (default %(default)s)')
    node.add_argument('--transport', action='append', choices=node_bench.TRANSPORTS,
                      help='raw (Image) or compressed (JPEG CompressedImage); repeatable, '
                           'default raw')
    node.add_argument('--profile', action='append',
                      help='DDS profile: large_images, none or an XML file (repeatable; '
                           'default large_images)')
    node.add_argument('--publisher', action='append', choices=node_bench.PUBLISHERS,
                      help='video (video_publisher) or minimal (pre-built messages in a loop); '
                           'repeatable, default video')
    node.add_argument('--video', help='make the frames from this video (resized), not a '
                      'generated clip')
    node.add_argument('--gt', help='ground truth of --video (its first box is the target)')
    node.add_argument('--box', help='target X,Y,W,H on the first frame of --video')
    node.add_argument('--clip-frames', type=int, default=40,
                      help='frames of the clip, played forward and back (default %(default)s)')
    node.add_argument('--work-dir', help='clips and process logs (default: a temporary folder)')
    return p


def _size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not WxH, e.g. 1280x720') from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f'{text}: frames must be at least 64x64')
    return width, height


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_node_bench(args: argparse.Namespace) -> int:
    """``siam-bench --node``: the runs of every size x transport x profile x publisher."""
    import itertools
    import tempfile

    from .siam_demo import DemoError, parse_box, resolve_model_arg
    try:
        import siam_tracker_interfaces.msg  # noqa: F401
    except ImportError:
        print('siam-bench: error: siam_tracker_interfaces is not importable: build it with '
              '`make setup` and `source install/setup.sh`', file=sys.stderr)
        return 1
    if args.model and len(args.model) > 1:
        print('siam-bench: error: --node takes one --model', file=sys.stderr)
        return 1
    sizes = args.size or [(1280, 720), (1920, 1080)]
    transports = args.transport or ['raw']
    publishers = args.publisher or ['video']
    work = Path(args.work_dir or tempfile.mkdtemp(prefix='siam_bench_node_'))
    frames = max(1, int(round(args.rate * args.duration)))
    runs: List[Dict[str, object]] = []
    failed: List[Dict[str, str]] = []
    # SIGTERM as Ctrl-C: the node and publisher processes are stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    lease = isolation.private_domain()
    try:
        profiles = args.profile or [dds_profile.LARGE_IMAGES]
        for profile in profiles:
            dds_profile.profile_path(profile)
        model = resolve_model_arg(args.model[0] if args.model else 'nanotrack-v3', None,
                                  log=lambda text: print(text, file=sys.stderr))
        box = parse_box(args.box) if args.box else None
        print(f'siam-bench --node: {model}, ROS_DOMAIN_ID={lease.domain_id} (localhost only), '
              f'{frames} frames at {args.rate:g} Hz per run; logs in {work}')
        for size in sizes:
            clip, first_box = node_bench.write_bench_clip(
                work / f'clip_{size[0]}x{size[1]}.avi', size, args.clip_frames, args.video,
                args.gt, box)
            for transport, profile, publisher in itertools.product(transports, profiles,
                                                                   publishers):
                cfg = node_bench.RunConfig(
                    model=model, clip=clip, box=first_box, size=size, frames=frames,
                    rate=args.rate, transport=transport, profile=profile, publisher=publisher,
                    backend=(args.backend or ['auto'])[0], device=args.device or 'cpu',
                    log_dir=work / f'{size[0]}x{size[1]}_{transport}_{publisher}_'
                                   f'{Path(profile).stem}')
                try:
                    result = node_bench.run_node(cfg, lease.domain_id, log=print)
                except node_bench.BenchError as exc:  # the other runs still go ahead
                    print(f'{cfg.label()}: failed: {exc}', flush=True)
                    failed.append({'label': cfg.label(), 'error': str(exc)})
                    continue
                runs.append(result)
                print(node_bench.format_run(result), flush=True)
    except (node_bench.BenchError, dds_profile.ProfileError, DemoError, ValueError,
            OSError) as exc:
        print(f'siam-bench: error: {exc}', file=sys.stderr)
        return 1
    finally:
        lease.release()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({'node_runs': runs, 'failed': failed,
                                               'host': host_info()}, indent=1) + '\n')
        print(f'wrote {args.json}')
    return 1 if failed else 0


def _print_run(run: Dict[str, object]) -> None:
    stages = run['stages_ms']
    cells = '  '.join(f'{s} {stages[s]["p50"]:7.2f}/{stages[s]["p99"]:7.2f}'
                      for s in STAGES if s in stages)
    label = f'{run["backend"]} {run["preset"]}' if 'preset' in run else run['backend']
    print(f'{run["model"]:<28} {label:<22} {run["device"]:<8} {cells}')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.node:
        return run_node_bench(args)
    if not args.model:
        build_parser().error('--model is required (or --node)')
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
            presets = args.preset or ['default']
            for preset_name in presets:
                stages = bench_tracker(spec, backend, frames, box, args.template_reps,
                                       preset_name)
                run = {'model': spec.name, 'arch': spec.arch, 'backend': name,
                       'preset': preset_name, 'device': getattr(backend, 'device', device),
                       'frames': len(frames), 'stages_ms': stages}
                runs.append(run)
                _print_run(run)
            if 'plain' in presets and len(presets) > 1:
                same = {r['preset']: r['stages_ms']['step']['p50'] for r in runs
                        if r['model'] == spec.name and r['backend'] == name and 'preset' in r}
                print('  whole step p50 against plain (same run): ' + ', '.join(
                    f'{k} {v / same["plain"]:.2f}x' for k, v in same.items() if k != 'plain'))
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
