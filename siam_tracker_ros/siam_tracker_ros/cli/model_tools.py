"""
siam-model subcommands 'import pysot', 'build-engine' and 'check-backend'.

``add_subcommands(subparsers, import_subparsers)`` registers them on siam-model's parser; each
handler returns the process exit code:

* 0: done / outputs agree within tolerance;
* 1: outputs disagree beyond tolerance, or the model could not be read or written;
* 3: the backend cannot run here (TensorRT not importable, no GPU, no CUDA bindings): the
  message says what is missing. A missing engine (e.g. an INT8 engine not built yet), an
  engine that cannot be built or an error while running is 1, with the reason.

``check-backend`` is the command that proves a backend on the user's machine: it runs the
backend beside ONNX Runtime (CPU) on the same real crops and prints the max abs error of every
output and the latency percentiles of both.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import hashlib
import json
from pathlib import Path
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import BackendError
from ..backends.cuda import CudaUnavailable
from ..core.crop import context_size, crop_window, to_blob
from ..core.manifest import ModelError, ModelSpec, temporal_inputs
from ..eval.metrics import timing_stats

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3

# Default pass tolerance per precision: max|candidate - reference| <= tol * max|reference|.
TOLERANCES = {'fp32': 1e-3, 'fp16': 3e-2, 'int8': 0.15}


# ----------------------------------------------------------------------------------------------
# crops cut from frames, the way the tracker cuts them

@dataclass(frozen=True)
class CropPair:
    """
    Template crop, search crop of the next frame around the same centre, target size.

    The target size is in search-crop pixels (what the tracker's penalties compare against).
    """

    template: np.ndarray
    search: np.ndarray
    target_wh: Tuple[float, float]


def _frames_and_boxes(frames_dir: Optional[str], count: int,
                      seed: int) -> Tuple[List[np.ndarray], List[Tuple[float, ...]], str]:
    """
    Frames with one target box each, and where they came from.

    A sequence folder gives its ground truth; a folder of images a centred box of a quarter
    of the frame; no folder a generated moving-target sequence.
    """
    from ..eval import synthetic
    from ..io import sequences
    if frames_dir is None:
        seq = synthetic.moving_target(frames=max(count + 1, 2), seed=seed)
        return seq.frames, [tuple(b) for b in seq.boxes], 'generated moving-target sequence'
    folder = Path(frames_dir)
    if sequences.is_sequence_dir(folder):
        seq = sequences.load_sequence(folder)
        ok = [i for i in range(len(seq)) if not np.isnan(seq.gt[i]).any()]
        pick = [ok[int(round(j))] for j in np.linspace(0, len(ok) - 1, min(len(ok), count + 1))]
        frames = [sequences.read_frame(seq.frames[i]) for i in pick]
        return frames, [tuple(seq.gt[i]) for i in pick], f'sequence {folder}'
    if not folder.is_dir():
        raise ValueError(f'frames folder {folder} does not exist')
    paths = sequences.list_frames(folder)
    if not paths:
        raise ValueError(f'{folder} holds no images ({", ".join(sequences.IMAGE_SUFFIXES)}) '
                         f'and is not a sequence folder (img/ + groundtruth.txt)')
    pick = [paths[int(round(j))] for j in np.linspace(0, len(paths) - 1,
                                                      min(len(paths), count + 1))]
    frames = [sequences.read_frame(p) for p in pick]
    boxes = [(f.shape[1] * 3 / 8, f.shape[0] * 3 / 8, f.shape[1] / 4, f.shape[0] / 4)
             for f in frames]
    return frames, boxes, f'images in {folder} (centred boxes)'


def crop_pairs(spec: ModelSpec, frames_dir: Optional[str] = None, count: int = 8,
               seed: int = 0) -> Tuple[List[CropPair], str]:
    """
    ``count`` (template, search) crop pairs cut with the core crop function.

    Pair i takes the template from frame i at its box and the search crop from frame i + 1
    around the frame-i centre, with the tracker's context and scale rules.
    """
    frames, boxes, source = _frames_and_boxes(frames_dir, count, seed)
    cfg = spec.tracker.step
    pairs = []
    for i in range(max(len(frames) - 1, 1)):
        image = frames[i]
        x, y, w, h = (float(v) for v in boxes[i])
        center = (x + (w - 1) / 2.0, y + (h - 1) / 2.0)
        pad = tuple(float(np.floor(c)) for c in image.reshape(-1, 3).mean(axis=0))
        s_z = context_size(w, h, cfg.context_amount)
        scale_z = cfg.exemplar_size / s_z
        s_x = s_z * cfg.instance_size / cfg.exemplar_size
        z = crop_window(image, center, max(int(round(s_z)), 1), cfg.exemplar_size, pad)
        nxt = frames[min(i + 1, len(frames) - 1)]
        xs = crop_window(nxt, center, max(int(round(s_x)), 1), cfg.instance_size, pad)
        pairs.append(CropPair(to_blob(z), to_blob(xs), (w * scale_z, h * scale_z)))
    return pairs[:count], source


# ----------------------------------------------------------------------------------------------
# comparison of two backends

def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1e3


def compare_backends(spec: ModelSpec, candidate, reference, pairs: Sequence[CropPair],
                     tolerance: float) -> Dict[str, object]:
    """
    Run both backends on every pair; max abs errors per output, latencies, top-1 agreement.

    Each backend runs its own chain (its template features into its own search graph), so
    the errors are what the tracker would see. One warm-up call per backend is not timed.
    """
    from ..core.decode import make_decoder, select_candidate
    decoder = make_decoder(spec)
    cfg = spec.tracker.step
    for backend in (candidate, reference):
        backend.track(backend.encode_template(pairs[0].template), pairs[0].search)
    names: List[str] = []
    worst: Dict[str, float] = {}
    scale: Dict[str, float] = {}
    times = {'candidate': {'template': [], 'search': []},
             'reference': {'template': [], 'search': []}}
    agree = 0
    box_err = 0.0
    for pair in pairs:
        outs = {}
        for role, backend in (('candidate', candidate), ('reference', reference)):
            feats, t_ms = _timed(backend.encode_template, pair.template)
            (cls, reg), s_ms = _timed(backend.track, feats, pair.search)
            times[role]['template'].append(t_ms)
            times[role]['search'].append(s_ms)
            outs[role] = list(feats) + [cls, reg]
        if not names:
            n_feat = len(outs['reference']) - 2
            names = [f'feature{i}' for i in range(n_feat)] + ['cls', 'reg']
        if len(outs['candidate']) != len(outs['reference']):
            raise BackendError(f'the backends give {len(outs["candidate"])} and '
                               f'{len(outs["reference"])} outputs')
        for name, got, ref in zip(names, outs['candidate'], outs['reference']):
            if got.shape != ref.shape:
                raise BackendError(f'output {name}: shape {got.shape} vs reference {ref.shape}')
            worst[name] = max(worst.get(name, 0.0), float(np.max(np.abs(got - ref))))
            scale[name] = max(scale.get(name, 0.0), float(np.max(np.abs(ref))))
        picks = []
        for role in ('candidate', 'reference'):
            cands = decoder.decode(outs[role][-2], outs[role][-1])
            sel = select_candidate(cands, pair.target_wh[0], pair.target_wh[1], cfg.penalty_k,
                                   cfg.window_influence)
            picks.append((sel.index, cands.boxes[:, sel.index]))
        agree += int(picks[0][0] == picks[1][0])
        box_err = max(box_err, float(np.max(np.abs(picks[0][1] - picks[1][1]))))
    outputs = {}
    passed = True
    for name in names:
        rel = worst[name] / max(scale[name], 1e-12)
        ok = rel <= tolerance
        passed &= ok
        outputs[name] = {'max_abs_err': worst[name], 'max_abs_ref': scale[name],
                         'rel_err': rel, 'ok': ok}
    return {
        'pairs': len(pairs), 'tolerance': tolerance, 'passed': bool(passed),
        'outputs': outputs,
        'top1_agreement': agree / len(pairs),
        'top1_box_max_abs_diff_px': box_err,
        'latency_ms': {role: {stage: timing_stats(v) for stage, v in stages.items()}
                       for role, stages in times.items()},
    }


# ----------------------------------------------------------------------------------------------
# handlers

def _load(model: str) -> ModelSpec:
    from ..factory import resolve_model
    return resolve_model(model)


def _unavailable(command: str, exc: Exception) -> int:
    print(f'siam-model {command}: not possible here: {exc}', file=sys.stderr)
    return EXIT_UNAVAILABLE


def run_import_pysot(args) -> int:
    """Run `siam-model import pysot`."""
    try:
        from ..nets.pysot_import import import_pysot, OPSET
    except ModuleNotFoundError as exc:
        print(f'siam-model import pysot: not possible here: {exc}; importing a pysot '
              'checkpoint needs PyTorch (pip install torch)', file=sys.stderr)
        return EXIT_UNAVAILABLE
    opset = OPSET if args.opset is None else args.opset
    try:
        spec = import_pysot(args.config, args.checkpoint, args.out, name=args.name,
                            opset=opset, verify=not args.no_verify)
    except (ModelError, OSError, ValueError) as exc:
        print(f'siam-model import pysot: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    print(f'imported {spec.name} ({spec.arch}, {spec.family}/{spec.decoder}) into {spec.root}')
    print(f'  graphs: {spec.files["template"]}, {spec.files["search"]} (opset {opset}); '
          f'tracker: penalty_k={spec.tracker.step.penalty_k} window_influence='
          f'{spec.tracker.step.window_influence} lr={spec.tracker.step.lr} '
          f'instance_size={spec.tracker.step.instance_size}')
    return EXIT_OK


def calibration_batches(spec: ModelSpec, frames_dir: str,
                        count: int = 64) -> Dict[str, List[Dict[str, np.ndarray]]]:
    """
    INT8 calibration feeds per graph role, from crops of real frames.

    The template graph gets template crops; the search graph gets search crops with the
    template features of the same pair (computed with ONNX Runtime on the CPU). For a
    backbone/head model the backbone gets the search crops and the head both crops' features.
    Crops are normalised with the manifest's mean/std, as the backends do before inference.
    A temporal search graph gets each crop's own features as the previous frames'.
    """
    import onnxruntime as ort
    from ..backends.engine_build import prepare_input
    pairs, _ = crop_pairs(spec, frames_dir, count)
    first, second = spec.graph_roles
    sessions = [ort.InferenceSession(str(spec.path(role)), providers=['CPUExecutionProvider'])
                for role in (first, second)]
    f_input = sessions[0].get_inputs()[0].name
    s_inputs = [i.name for i in sessions[1].get_inputs()]

    def encode(blob):
        return sessions[0].run(None, {f_input: blob})

    previous = temporal_inputs(spec.temporal_frames)
    own_features = _own_features(sessions[1], previous)

    out: Dict[str, List[Dict[str, np.ndarray]]] = {first: [], second: []}
    for pair in pairs:
        template = prepare_input(spec, pair.template)
        search = prepare_input(spec, pair.search)
        if spec.layout == 'backbone_head':
            # TensorRT calibrates a dynamic input at its profile's opt shape: the search crop.
            out[first].append({f_input: search})
            out[second].append({s_inputs[0]: encode(template)[0],
                                s_inputs[1]: encode(search)[0]})
        else:
            out[first].append({f_input: template})
            feed = {'search': search}
            feed.update(zip([n for n in s_inputs if n != 'search' and n not in previous],
                            encode(template)))
            if previous:
                feed.update(zip(previous, own_features(feed)))
            out[second].append(feed)
    return out


def _own_features(session, previous: Sequence[str]):
    """
    Return a function: search-graph feed -> the crop's own ``xf`` for every previous input.

    A temporal graph is calibrated as on a first frame, where the crop's own features stand
    in for the earlier frames' (TemporalShift's rule).
    """
    from ..core.manifest import TEMPORAL_OUTPUT
    zeros = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()
             if i.name in previous}

    def run(feed):
        xf, = session.run([TEMPORAL_OUTPUT], {**feed, **zeros})
        return [xf] * len(previous)
    return run


def calibration_digest(frames_dir: str, count: int) -> str:
    """
    Identify a calibration set: the frames folder's files (paths, sizes) and the count.

    The INT8 calibration table is cached under it, so other frames or another count
    recalibrate.
    """
    folder = Path(frames_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f'frames folder {folder} does not exist')
    digest = hashlib.sha256(f'{folder}|count={int(count)}'.encode())
    for path in sorted(p for p in folder.rglob('*') if p.is_file()):
        digest.update(f'|{path.relative_to(folder)}:{path.stat().st_size}'.encode())
    return digest.hexdigest()


def run_build_engine(args) -> int:
    """Run `siam-model build-engine`."""
    from ..backends import engine_build as eb
    try:
        spec = _load(args.model)
    except ModelError as exc:
        print(f'siam-model build-engine: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    precision = args.precision
    if precision == 'int8' and not args.calib:
        print('siam-model build-engine: --int8 needs --calib FRAMES_DIR (a sequence folder or '
              'a folder of images to cut calibration crops from)', file=sys.stderr)
        return EXIT_FAILED
    try:
        info = eb.runtime_info()
    except BackendError as exc:
        return _unavailable('build-engine', exc)
    cache = Path(args.cache).expanduser() if args.cache else eb.default_cache_dir()
    try:
        model = eb.tensorrt_model(spec, cache)
        if model.root != spec.root:
            print(f'{spec.name}: its graphs have Conv nodes with run-time weights, which '
                  f'TensorRT cannot build; using the split export of its checkpoint in '
                  f'{model.root}')
        calibration = None
        if precision == 'int8':
            calibration = eb.Calibration(
                calibration_digest(args.calib, args.calib_count),
                lambda: calibration_batches(model, args.calib, args.calib_count))
        engines = eb.ensure_engines(model, precision, info=info, cache_dir=cache,
                                    force=args.force, calibration=calibration,
                                    workspace_mb=args.workspace)
    except (BackendError, ValueError) as exc:
        print(f'siam-model build-engine: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    print(f'TensorRT {info.trt_version} on {info.gpu_name}, {precision}:')
    for role, eng in engines.items():
        state = 'built' if eng.built else 'cached'
        print(f'  {role}: {eng.path} ({state}, key {eng.key.digest[:16]})')
        if eng.calibration:
            print(f'    {eng.calibration}')
    return EXIT_OK


def _backend_options(args) -> Dict[str, object]:
    if args.backend == 'tensorrt':
        return {'precision': args.precision, 'cache_dir': args.cache}
    return {}


def run_check_backend(args) -> int:
    """Run `siam-model check-backend`."""
    from ..backends.onnxruntime_backend import OnnxRuntimeBackend
    from ..backends.registry import create_backend
    try:
        spec = _load(args.model)
    except ModelError as exc:
        print(f'siam-model check-backend: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    device = args.device or ('cuda' if args.backend == 'tensorrt' else 'cpu')
    try:
        candidate = create_backend(args.backend, spec, device=device, **_backend_options(args))
    except CudaUnavailable as exc:
        return _unavailable('check-backend', f'{args.backend} backend: {exc}')
    except BackendError as exc:
        print(f'siam-model check-backend: error: {args.backend} backend: {exc}',
              file=sys.stderr)
        return EXIT_FAILED
    try:
        reference = OnnxRuntimeBackend(spec, device='cpu')
        pairs, source = crop_pairs(spec, args.frames, args.count)
        precision = args.precision if args.backend == 'tensorrt' else 'fp32'
        tol = args.tolerance if args.tolerance is not None else TOLERANCES[precision]
        report = compare_backends(spec, candidate, reference, pairs, tol)
    except (BackendError, ValueError) as exc:
        print(f'siam-model check-backend: error: {args.backend} backend: {exc}',
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        close = getattr(candidate, 'close', None)
        if close is not None:
            close()
    report.update({'model': spec.name, 'arch': spec.arch, 'backend': args.backend,
                   'device': getattr(candidate, 'device', device), 'precision': precision,
                   'reference': 'onnxruntime cpu', 'crops_from': source})
    _print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + '\n')
    return EXIT_OK if report['passed'] else EXIT_FAILED


def _print_report(r: Dict[str, object]) -> None:
    print(f'{r["model"]} ({r["arch"]}): {r["backend"]} on {r["device"]} ({r["precision"]}) vs '
          f'{r["reference"]}, {r["pairs"]} crop pairs from {r["crops_from"]}')
    print(f'  {"output":<10} {"max abs err":>12} {"max |ref|":>11} {"rel":>9}  ok')
    for name, o in r['outputs'].items():
        print(f'  {name:<10} {o["max_abs_err"]:>12.3g} {o["max_abs_ref"]:>11.3g} '
              f'{o["rel_err"]:>9.2g}  {"yes" if o["ok"] else "NO"}')
    print(f'  top-1 candidate agreement {r["top1_agreement"]:.0%}, max top-1 box difference '
          f'{r["top1_box_max_abs_diff_px"]:.3g} px (search-crop pixels)')
    for role in ('candidate', 'reference'):
        lat = r['latency_ms'][role]
        label = r['backend'] if role == 'candidate' else 'onnxruntime'
        print(f'  latency {label:<12} template p50 {lat["template"]["p50"]:8.2f} ms '
              f'p90 {lat["template"]["p90"]:8.2f} p99 {lat["template"]["p99"]:8.2f} | '
              f'search p50 {lat["search"]["p50"]:8.2f} ms p90 {lat["search"]["p90"]:8.2f} '
              f'p99 {lat["search"]["p99"]:8.2f}')
    verdict = 'PASS' if r['passed'] else 'FAIL'
    print(f'  {verdict}: every output within {r["tolerance"]:g} x max|reference|'
          if r['passed'] else f'  {verdict}: some output beyond {r["tolerance"]:g} x '
          'max|reference|')


# ----------------------------------------------------------------------------------------------
# argparse

def add_import_pysot(import_subparsers) -> argparse.ArgumentParser:
    """Register 'pysot' under siam-model's 'import' subcommand."""
    p = import_subparsers.add_parser(
        'pysot', help='a pysot SiamRPN++ checkpoint (alex, mobilev2, r50) with its config.yaml')
    p.add_argument('--config', required=True, help='pysot experiments/<name>/config.yaml')
    p.add_argument('--checkpoint', required=True, help='pysot model.pth')
    p.add_argument('--out', required=True, help='model directory to write')
    p.add_argument('--name', help='model name (default: META_ARC of the config)')
    p.add_argument('--opset', type=int,
                   help='ONNX opset (default: nets.pysot_import.OPSET, 17)')
    p.add_argument('--no-verify', action='store_true',
                   help='skip the ONNX Runtime vs PyTorch check of the exported graphs')
    p.set_defaults(handler=run_import_pysot)
    return p


def add_subcommands(subparsers, import_subparsers=None) -> None:
    """
    Register 'build-engine', 'check-backend' and 'import pysot' on siam-model's parser.

    ``import_subparsers`` is the sub-parser set of an existing 'import' command; without it an
    'import' command holding only 'pysot' is created.
    """
    if import_subparsers is None:
        imp = subparsers.add_parser('import', help='turn an upstream model into a product '
                                    'model directory')
        import_subparsers = imp.add_subparsers(dest='family', required=True)
    add_import_pysot(import_subparsers)

    build = subparsers.add_parser(
        'build-engine', help='build (or find cached) TensorRT engines for a model (needs an '
        'NVIDIA GPU with TensorRT 10)')
    build.add_argument('model', help='model directory or upstream NanoTrack folder')
    prec = build.add_mutually_exclusive_group()
    prec.add_argument('--fp16', dest='precision', action='store_const', const='fp16',
                      help='FP16 engine (default)')
    prec.add_argument('--int8', dest='precision', action='store_const', const='int8',
                      help='INT8 engine calibrated on crops from --calib FRAMES (FP16 fallback)')
    prec.add_argument('--fp32', dest='precision', action='store_const', const='fp32',
                      help='FP32 engine')
    build.set_defaults(precision='fp16')
    build.add_argument('--calib', metavar='FRAMES', help='sequence folder (img/ + '
                       'groundtruth.txt) or folder of images for INT8 calibration')
    build.add_argument('--calib-count', type=int, default=64,
                       help='calibration crop pairs (default %(default)s)')
    build.add_argument('--cache', help='engine cache folder (default $SIAM_ENGINE_CACHE or '
                       '~/.cache/siam_tracker_ros/engines)')
    build.add_argument('--force', action='store_true', help='rebuild even when cached')
    build.add_argument('--workspace', type=int, default=1024,
                       help='builder workspace in MiB (default %(default)s)')
    build.set_defaults(handler=run_build_engine)

    check = subparsers.add_parser(
        'check-backend', help='run a backend beside ONNX Runtime on real crops: max abs error '
        'per output and latency percentiles')
    check.add_argument('model', help='model directory or upstream NanoTrack folder')
    check.add_argument('--backend', required=True, choices=['tensorrt', 'torch', 'onnxruntime'])
    check.add_argument('--frames', help='sequence folder or image folder to cut crops from '
                       '(default: a generated moving-target sequence)')
    check.add_argument('--count', type=int, default=16, help='crop pairs (default %(default)s)')
    check.add_argument('--device', help='device of the checked backend (default cuda for '
                       'tensorrt, else cpu)')
    check.add_argument('--precision', choices=['fp32', 'fp16', 'int8'], default='fp16',
                       help='tensorrt engine precision (default %(default)s)')
    check.add_argument('--cache', help='tensorrt engine cache folder')
    check.add_argument('--tolerance', type=float,
                       help='allowed max abs error relative to max|reference| (default: '
                       + ', '.join(f'{k} {v:g}' for k, v in TOLERANCES.items()) + ')')
    check.add_argument('--json', help='also write the report as JSON here')
    check.set_defaults(handler=run_check_backend)
