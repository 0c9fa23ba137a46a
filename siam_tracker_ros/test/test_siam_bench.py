"""
siam-bench: stage timings per backend, JSON layout, TrackerNano beside NanoTrack v1/v2.

Benchmarks print figures; these tests check what is measured and reported, never speed.
"""
import json

import pytest

from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.backends.registry import available
from siam_tracker_ros.cli import siam_bench

STAGES = {'crop', 'template', 'search', 'decode', 'step'}


def _check_stages(stages, frames, template_reps):
    assert set(stages) == STAGES
    for stage, s in stages.items():
        assert 0 < s['p50'] <= s['p99'], stage
        expected = template_reps if stage == 'template' else frames - 2  # init + warm-up
        assert s['n'] == expected, stage
    # The stages are parts of the step.
    parts = stages['crop']['p50'] + stages['search']['p50'] + stages['decode']['p50']
    assert parts <= stages['step']['p99'] * 1.5


@pytest.fixture(scope='module')
def alex_model(tmp_path_factory):
    pytest.importorskip('torch', reason='the random SiamRPN model is built with PyTorch')
    from siam_tracker_ros.nets.pysot_import import random_model
    spec, _ = random_model('siamrpn_alex', tmp_path_factory.mktemp('alex') / 'model', seed=2)
    return spec


def test_bench_siamrpn_on_generated_frames_with_two_backends(alex_model, tmp_path, capsys):
    out = tmp_path / 'bench.json'
    rc = siam_bench.main(['--model', str(alex_model.root), '--backend', 'onnxruntime',
                          '--backend', 'torch', '--backend', 'tensorrt', '--frames', '5',
                          '--template-reps', '3', '--json', str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    runs = {r['backend']: r for r in result['runs']}
    assert set(runs) >= {'onnxruntime', 'torch'}
    for name in ('onnxruntime', 'torch'):
        run = runs[name]
        assert run['model'] == alex_model.name and run['device'] == 'cpu'
        assert run['frames'] == 5
        _check_stages(run['stages_ms'], 5, 3)
    if not available('tensorrt'):
        skipped = {s['backend']: s['reason'] for s in result['skipped']}
        assert 'TensorRT' in skipped['tensorrt']
    assert 'generated' in result['frames_from']
    assert result['host']['cores'] >= 1
    text = capsys.readouterr().out
    assert 'search' in text and 'p50/p99' in text
    # No TrackerNano beside a SiamRPN++ model.
    assert not any(r['backend'] == 'opencv-nano' for r in result['runs'])


def test_bench_nanotrack_v2_beside_opencv_trackernano_on_a_sequence(tmp_path, capsys):
    model = need(MODELS / 'nanotrack-v2')
    sequence = need(SEQUENCES / 'Crossing')
    out = tmp_path / 'bench.json'
    rc = siam_bench.main(['--model', str(model), '--sequence', str(sequence), '--frames', '6',
                          '--template-reps', '2', '--json', str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    runs = {r['backend']: r for r in result['runs']}
    _check_stages(runs['onnxruntime']['stages_ms'], 6, 2)
    peer = runs['opencv-nano']
    assert set(peer['stages_ms']) == {'step'} and peer['stages_ms']['step']['n'] == 4
    assert 'Crossing' in result['frames_from']
    assert 'side by side' in capsys.readouterr().out


def test_bench_trackernano_needs_the_upstream_pair_for_a_split_model(alex_model, tmp_path):
    """
    Require --peer-model for TrackerNano beside a template/search model.

    Without it the reason goes into the JSON's skipped list.
    """
    from siam_tracker_ros.core.manifest import load_manifest
    from siam_tracker_ros.eval.peers import PeerUnavailable
    spec = load_manifest(alex_model.root)
    with pytest.raises(PeerUnavailable, match='--peer-model'):
        siam_bench.nano_peer_files(spec, None)
    backbone, head = siam_bench.nano_peer_files(spec, str(need(MODELS / 'nanotrack-v1')))
    assert backbone.name == 'nanotrack_backbone_sim.onnx' and head.is_file()


def test_bench_refuses_too_few_frames(alex_model, capsys):
    rc = siam_bench.main(['--model', str(alex_model.root), '--frames', '1'])
    assert rc == 1
    assert 'at least 2' in capsys.readouterr().err
