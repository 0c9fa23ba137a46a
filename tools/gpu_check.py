#!/usr/bin/env python3
"""
The checks that need an NVIDIA GPU, in one run (CI has none; run this where one is lent).

1. The CUDA helper of the TensorRT backend (``backends/cuda.py``) on the real driver:
   device name, device and page-locked memory, a stream, copies both ways on random data
   with the host buffer poisoned first, and the error for a device that does not exist.
2. The PyTorch backend on CUDA (fp32 with and without CUDA graphs, fp16) against ONNX Runtime
   on the CPU, on random crops: relative error of the features and the score and box maps,
   and the median time of one search call (``track``) for each.
3. The tracker on real sequences with ``siam-eval``: torch on CUDA against ONNX Runtime on
   the CPU, same preset, same starts; AUC per sequence side by side.
4. ``siam-bench`` on one sequence: the same two, whole-step p50, ratio in the same run.

TensorRT itself is not checked here unless it is importable (``tensorrt``); the machines this
project is lent carry no TensorRT and can fetch nothing.

Usage: PYTHONPATH=siam_tracker_ros python3 tools/gpu_check.py --model MODEL_DIR
       --sequence SEQ [--sequence SEQ ...] --out DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import numpy as np


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """Return ||out - ref|| / ||ref|| in float64 (inf for NaN)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        return float('inf')
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def check_cuda_helper() -> dict:
    """Round trips through the CUDA helper; raise on any mismatch."""
    from siam_tracker_ros.backends.cuda import cuda_api, usable_device
    api = cuda_api(0)
    result = {'library': api.library, 'device': api.device_name()}
    rng = np.random.default_rng()
    data = rng.standard_normal((3, 255, 255)).astype(np.float32)
    dptr = api.malloc(data.nbytes)
    host = api.host_empty(data.shape, np.float32)
    stream = api.stream()
    try:
        for label, s in (('stream', stream), ('default stream', 0)):
            host[...] = np.nan
            api.copy_to_device(dptr, data, s)
            api.copy_to_host(host, dptr, data.nbytes, s or stream)
            api.synchronize(s or stream)
            if not np.array_equal(host, data):
                raise AssertionError(f'CUDA round trip on the {label} changed the data')
            result[f'round_trip_{label.replace(" ", "_")}'] = 'exact'
    finally:
        api.destroy_stream(stream)
        api.free_host(host)
        api.free(dptr)
    result['missing_device_error'] = usable_device('cuda:97')
    if not result['missing_device_error']:
        raise AssertionError('cuda:97 was reported usable')
    return result


def check_backends(model: Path) -> dict:
    """Torch on CUDA (fp32, fp16) against ONNX Runtime on the CPU, on random crops."""
    from siam_tracker_ros.backends.registry import create_backend
    from siam_tracker_ros.backends.torch_backend import TorchBackend
    from siam_tracker_ros.factory import resolve_model
    spec = resolve_model(model)
    z, x = spec.tracker.step.exemplar_size, spec.tracker.step.instance_size
    ref = create_backend('onnxruntime', spec, device='cpu')
    rng = np.random.default_rng()
    result = {}
    for label, backend in (('torch-cuda-fp32', TorchBackend(spec, 'cuda')),
                           ('torch-cuda-fp32-eager', TorchBackend(spec, 'cuda',
                                                                  cuda_graph=False)),
                           ('torch-cuda-fp16', TorchBackend(spec, 'cuda', fp16=True))):
        worst = {'template': 0.0, 'cls': 0.0, 'reg': 0.0}
        for _ in range(5):
            zc = rng.uniform(0, 255, (1, 3, z, z)).astype(np.float32)
            xc = rng.uniform(0, 255, (1, 3, x, x)).astype(np.float32)
            f_ref = ref.encode_template(zc)
            f_out = backend.encode_template(zc)
            worst['template'] = max(worst['template'],
                                    max(rel_err(a, b) for a, b in zip(f_out, f_ref)))
            cls_ref, reg_ref = ref.track(f_ref, xc)
            cls_out, reg_out = backend.track(f_ref, xc)
            worst['cls'] = max(worst['cls'], rel_err(cls_out, cls_ref))
            worst['reg'] = max(worst['reg'], rel_err(reg_out, reg_ref))
        result[label] = worst
        times = []
        for _ in range(300):
            start = time.perf_counter()
            backend.track(f_ref, xc)
            times.append(time.perf_counter() - start)
        result[label]['track_ms_p50'] = 1e3 * float(np.median(times[50:]))
    times = []
    for _ in range(300):
        start = time.perf_counter()
        ref.track(f_ref, xc)
        times.append(time.perf_counter() - start)
    result['onnxruntime-cpu'] = {'track_ms_p50': 1e3 * float(np.median(times[50:]))}
    return result


def run_eval(model: Path, sequences, out: Path, backend: str, device: str) -> dict:
    """siam-eval over ``sequences``; return {sequence: auc} and the mean."""
    from siam_tracker_ros.cli import siam_eval
    json_path = out / f'eval_{backend}_{device}.json'
    roots = sorted({str(Path(s).parent) for s in sequences})
    argv = ['--model', str(model), '--sequences', *roots,
            '--seq', *[Path(s).name for s in sequences], '--backend', backend,
            '--device', device, '--preset', 'default', '--repeats', '2', '--jitter', '0.3',
            '--json', str(json_path), '--quiet']
    start = time.monotonic()
    rc = siam_eval.main(argv)
    if rc != 0:
        raise RuntimeError(f'siam-eval {backend}/{device} returned {rc}')
    ours = json.loads(json_path.read_text())['trackers']['ours']
    return {'seconds': time.monotonic() - start, 'mean_auc': ours['mean']['auc'],
            'fps': ours['mean']['fps'],
            'auc': {name: s['auc'] for name, s in ours['sequences'].items()}}


def run_bench(model: Path, sequence: str, out: Path) -> dict:
    """siam-bench: ONNX Runtime CPU and torch CUDA on one sequence, plain and default."""
    from siam_tracker_ros.cli import siam_bench
    steps = {}
    for backend, device in (('onnxruntime', 'cpu'), ('torch', 'cuda')):
        json_path = out / f'bench_{backend}_{device}.json'
        rc = siam_bench.main(['--model', str(model), '--backend', backend, '--device', device,
                              '--preset', 'plain', '--preset', 'default', '--frames', '150',
                              '--no-peer', '--sequence', sequence, '--json', str(json_path)])
        if rc != 0:
            raise RuntimeError(f'siam-bench {backend}/{device} returned {rc}')
        for run in json.loads(json_path.read_text())['runs']:
            steps[f'{backend}-{device}-{run["preset"]}'] = run['stages_ms']['step']['p50']
    return steps


def main() -> int:
    """Run the four checks, write gpu_check.json under --out, print a short table."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--model', required=True, type=Path, help='product model directory')
    p.add_argument('--sequence', action='append', required=True, help='sequence folder')
    p.add_argument('--out', required=True, type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    try:
        import tensorrt  # noqa: F401
        report['tensorrt'] = tensorrt.__version__
    except ImportError as exc:
        report['tensorrt'] = f'not importable: {exc}'
    report['cuda_helper'] = check_cuda_helper()
    report['backends'] = check_backends(args.model)
    report['eval'] = {f'{b}-{d}': run_eval(args.model, args.sequence, args.out, b, d)
                      for b, d in (('onnxruntime', 'cpu'), ('torch', 'cuda'))}
    report['bench'] = run_bench(args.model, args.sequence[0], args.out)
    (args.out / 'gpu_check.json').write_text(json.dumps(report, indent=1) + '\n')
    print('\n== gpu_check ==')
    print('tensorrt:', report['tensorrt'])
    print('cuda helper:', report['cuda_helper'])
    for label, err in report['backends'].items():
        if label == 'onnxruntime-cpu':
            print(f'onnxruntime-cpu track() p50 {err["track_ms_p50"]:.2f} ms')
            continue
        print(f'{label} vs onnxruntime-cpu, worst rel. error of 5 random crops: '
              + ', '.join(f'{k} {v:.2e}' for k, v in err.items() if k != 'track_ms_p50')
              + f'; track() p50 {err["track_ms_p50"]:.2f} ms')
    ort, gpu = report['eval']['onnxruntime-cpu'], report['eval']['torch-cuda']
    for name in ort['auc']:
        print(f'AUC {name:<20} onnxruntime-cpu {ort["auc"][name]:.4f}  '
              f'torch-cuda {gpu["auc"][name]:.4f}')
    print(f'AUC mean onnxruntime-cpu {ort["mean_auc"]:.4f} torch-cuda {gpu["mean_auc"]:.4f}; '
          f'fps {ort["fps"]:.0f} / {gpu["fps"]:.0f}')
    b = report['bench']
    print('step p50 ms: ' + ', '.join(f'{k} {v:.2f}' for k, v in b.items()))
    print(f'torch-cuda / onnxruntime-cpu, default: '
          f'{b["torch-cuda-default"] / b["onnxruntime-cpu-default"]:.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
