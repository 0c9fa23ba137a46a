#!/usr/bin/env python3
"""
The checks that need an NVIDIA GPU, in one run (CI has none; run this where one is lent).

1. The CUDA helper of the TensorRT backend (``backends/cuda.py``) on the real driver:
   device name, device and page-locked memory, a stream, copies both ways on random data
   with the host buffer poisoned first, and the error for a device that does not exist.
2. The PyTorch backend on CUDA (fp32 with and without CUDA graphs, fp16) against ONNX Runtime
   on the CPU, with ``siam-model check-backend``'s comparison on real crop pairs of the first
   sequence: error per output within the precision's tolerance, template and search latency.
3. The tracker on real sequences with ``siam-eval``: torch on CUDA against ONNX Runtime on
   the CPU, same preset (``--preset``, ``--set``), same starts; AUC per sequence side by side.
4. ``siam-bench`` on one sequence: the same two, plain and default, whole-step p50, ratios in
   the same run.

TensorRT itself is not checked here unless it is importable (``tensorrt``); the machines this
project is lent carry no TensorRT and can fetch nothing.

Usage: PYTHONPATH=siam_tracker_ros python3 tools/gpu_check.py --model MODEL_DIR
       --sequence SEQ [--sequence SEQ ...] --out DIR [--preset P] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import numpy as np


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


def check_backends(model: Path, sequence: str) -> dict:
    """``siam-model check-backend``'s comparison for torch on CUDA (graph, eager, fp16)."""
    from siam_tracker_ros.backends.registry import create_backend
    from siam_tracker_ros.backends.torch_backend import TorchBackend
    from siam_tracker_ros.cli.model_tools import compare_backends, crop_pairs, TOLERANCES
    from siam_tracker_ros.factory import resolve_model
    spec = resolve_model(model)
    reference = create_backend('onnxruntime', spec, device='cpu')
    pairs, _ = crop_pairs(spec, sequence, 32)
    result = {}
    for label, backend, precision in (
            ('torch-cuda-fp32', TorchBackend(spec, 'cuda'), 'fp32'),
            ('torch-cuda-fp32-eager', TorchBackend(spec, 'cuda', cuda_graph=False), 'fp32'),
            ('torch-cuda-fp16', TorchBackend(spec, 'cuda', fp16=True), 'fp16')):
        report = compare_backends(spec, backend, reference, pairs, TOLERANCES[precision])
        if not report['passed']:
            raise AssertionError(f'{label} disagrees with onnxruntime-cpu: {report["outputs"]}')
        result[label] = report
    return result


def run_eval(model: Path, sequences, out: Path, backend: str, device: str,
             preset: str = 'default', settings=()) -> dict:
    """siam-eval over ``sequences`` (``preset``, ``--set`` ``settings``); AUC per sequence."""
    from siam_tracker_ros.cli import siam_eval
    json_path = out / f'eval_{backend}_{device}.json'
    roots = sorted({str(Path(s).parent) for s in sequences})
    argv = ['--model', str(model), '--sequences', *roots,
            '--seq', *[Path(s).name for s in sequences], '--backend', backend,
            '--device', device, '--preset', preset, '--repeats', '2', '--jitter', '0.3',
            '--json', str(json_path), '--quiet']
    for setting in settings:
        argv += ['--set', setting]
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
    p.add_argument('--preset', default='default', help="siam-eval's preset (default default)")
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help="siam-eval's tracker settings (repeatable)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    try:
        import tensorrt  # noqa: F401
        report['tensorrt'] = tensorrt.__version__
    except ImportError as exc:
        report['tensorrt'] = f'not importable: {exc}'
    report['cuda_helper'] = check_cuda_helper()
    report['backends'] = check_backends(args.model, args.sequence[0])
    report['eval'] = {f'{b}-{d}': run_eval(args.model, args.sequence, args.out, b, d,
                                           args.preset, args.set)
                      for b, d in (('onnxruntime', 'cpu'), ('torch', 'cuda'))}
    report['eval_settings'] = {'preset': args.preset, 'set': args.set}
    report['bench'] = run_bench(args.model, args.sequence[0], args.out)
    (args.out / 'gpu_check.json').write_text(json.dumps(report, indent=1) + '\n')
    print('\n== gpu_check ==')
    print('tensorrt:', report['tensorrt'])
    print('cuda helper:', report['cuda_helper'])
    print('eval settings:', report['eval_settings'])
    for label, r in report['backends'].items():
        lat = r['latency_ms']
        print(f'{label} vs onnxruntime-cpu on {r["pairs"]} real crop pairs, max abs error / '
              'max |reference|: '
              + ', '.join(f'{k} {o["rel_err"]:.1e}' for k, o in r['outputs'].items())
              + '; p50 ms ' + ', '.join(
                  f'{part} {lat["candidate"][part]["p50"]:.2f} (onnxruntime-cpu '
                  f'{lat["reference"][part]["p50"]:.2f})' for part in ('template', 'search')))
    ort, gpu = report['eval']['onnxruntime-cpu'], report['eval']['torch-cuda']
    for name in ort['auc']:
        print(f'AUC {name:<20} onnxruntime-cpu {ort["auc"][name]:.4f}  '
              f'torch-cuda {gpu["auc"][name]:.4f}')
    print(f'AUC mean onnxruntime-cpu {ort["mean_auc"]:.4f} torch-cuda {gpu["mean_auc"]:.4f}; '
          f'fps {ort["fps"]:.0f} / {gpu["fps"]:.0f}')
    b = report['bench']
    print('step p50 ms: ' + ', '.join(f'{k} {v:.2f}' for k, v in b.items()))
    print(f'torch-cuda / onnxruntime-cpu, default: '
          f'{b["torch-cuda-default"] / b["onnxruntime-cpu-default"]:.2f}x; default / plain: '
          + ', '.join(f'{k} {b[f"{k}-default"] / b[f"{k}-plain"]:.2f}x'
                      for k in ('onnxruntime-cpu', 'torch-cuda')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
