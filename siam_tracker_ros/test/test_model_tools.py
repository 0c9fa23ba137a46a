"""
siam-model 'import pysot', 'build-engine' and 'check-backend', run as commands.

The commands are run through siam-model's own ``main``.
check-backend is exercised for real with torch and onnxruntime against ONNX Runtime; the
tensorrt paths are checked for their clear refusal where TensorRT cannot run.
"""
import json
import shutil

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.backends import engine_build as eb
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.cli import model_tools as mt
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.manifest import load_manifest, write_manifest
from siam_tracker_ros.nets import pysot_import as P
from siam_tracker_ros.nets import siamrpn as S
import torch

CONFIGS = MODELS / 'pysot-configs-no-weights'


def _tensorrt_missing() -> str:
    try:
        eb.runtime_info()
    except BackendError as exc:
        return str(exc)
    return ''


@pytest.fixture(scope='module')
def alex_checkpoint(tmp_path_factory):
    """Write a pysot-format alex checkpoint (training-snapshot layout, DataParallel prefix)."""
    net = S.build('siamrpn_alex')
    P.randomise(net, seed=7)
    path = tmp_path_factory.mktemp('ckpt') / 'model.pth'
    torch.save({'epoch': 20, 'state_dict': {'module.' + k: v for k, v in
                                            net.state_dict().items()}}, path)
    return path, net


@pytest.fixture(scope='module')
def imported(alex_checkpoint, tmp_path_factory):
    """`siam-model import pysot` of the alex checkpoint with the shared alex config."""
    config = need(CONFIGS / 'siamrpn_alex_dwxcorr' / 'config.yaml')
    out = tmp_path_factory.mktemp('imported') / 'alex'
    rc = siam_model.main(['import', 'pysot', '--config', str(config), '--checkpoint',
                          str(alex_checkpoint[0]), '--out', str(out)])
    assert rc == 0
    return load_manifest(out)


def test_import_pysot_writes_a_complete_model_dir(imported, alex_checkpoint):
    spec = imported
    assert spec.name == 'siamrpn_alex_dwxcorr'
    assert (spec.family, spec.decoder, spec.arch, spec.stride) == \
        ('siamrpn', 'anchor', 'siamrpn_alex', 8)
    assert sorted(spec.files) == ['checkpoint', 'search', 'template']
    t = spec.tracker.step
    assert (t.instance_size, t.penalty_k, t.window_influence, t.lr) == (287, 0.16, 0.40, 0.30)
    # The stored checkpoint is the full state dict of the imported weights.
    saved = torch.load(spec.path('checkpoint'), weights_only=True)['state_dict']
    for key, value in alex_checkpoint[1].state_dict().items():
        assert torch.equal(saved[key], value)


def test_import_pysot_refuses_a_checkpoint_of_another_config(alex_checkpoint, tmp_path,
                                                             capsys):
    config = need(CONFIGS / 'siamrpn_mobilev2_l234_dwxcorr' / 'config.yaml')
    rc = siam_model.main(['import', 'pysot', '--config', str(config), '--checkpoint',
                          str(alex_checkpoint[0]), '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert rc == mt.EXIT_FAILED
    assert 'missing keys' in err and 'unexpected keys' in err
    assert 'backbone.layer0.0.weight' in err  # a mobilenet key the alex file lacks
    assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_import_pysot_refuses_a_siammask_config(alex_checkpoint, tmp_path, capsys):
    config = need(CONFIGS / 'siammask_r50_l3' / 'config.yaml')
    rc = siam_model.main(['import', 'pysot', '--config', str(config), '--checkpoint',
                          str(alex_checkpoint[0]), '--out', str(tmp_path / 'out')])
    assert rc == mt.EXIT_FAILED
    assert 'MASK' in capsys.readouterr().err


def test_check_backend_torch_against_onnxruntime_on_real_crops(imported, tmp_path, capsys):
    frames = need(SEQUENCES / 'Crossing')
    out = tmp_path / 'check.json'
    rc = siam_model.main(['check-backend', '--backend', 'torch', str(imported.root), '--frames',
                          str(frames), '--count', '4', '--json', str(out)])
    text = capsys.readouterr().out
    assert rc == mt.EXIT_OK, text
    report = json.loads(out.read_text())
    assert report['passed'] and report['pairs'] == 4
    assert set(report['outputs']) == {'feature0', 'feature1', 'cls', 'reg'}
    for o in report['outputs'].values():
        assert 0 <= o['max_abs_err'] <= 1e-3 * o['max_abs_ref']
        assert o['max_abs_ref'] > 0.1  # real activations, not zeros
    assert report['top1_agreement'] == 1.0
    lat = report['latency_ms']['candidate']
    assert lat['search']['n'] == 4 and 0 < lat['search']['p50'] <= lat['search']['p99']
    assert 'max abs err' in text and 'PASS' in text and 'sequence' in report['crops_from']


def test_check_backend_onnxruntime_against_itself_is_exact(imported, capsys):
    rc = siam_model.main(['check-backend', '--backend', 'onnxruntime', str(imported.root),
                          '--count', '2'])
    assert rc == mt.EXIT_OK
    assert 'generated moving-target sequence' in capsys.readouterr().out


def test_check_backend_fails_when_the_backend_disagrees(imported, tmp_path, capsys):
    """A model whose checkpoint differs from its graphs must be caught (exit 1)."""
    bad = tmp_path / 'bad'
    shutil.copytree(imported.root, bad)
    other = S.build('siamrpn_alex')
    P.randomise(other, seed=8)
    torch.save({'arch': 'siamrpn_alex', 'state_dict': other.state_dict()},
               bad / imported.files['checkpoint'])
    spec = load_manifest(bad, verify=False)
    write_manifest(spec)
    rc = siam_model.main(['check-backend', '--backend', 'torch', str(bad), '--count', '2'])
    text = capsys.readouterr().out
    assert rc == mt.EXIT_FAILED
    assert 'FAIL' in text and 'NO' in text


def test_crop_pairs_follow_the_tracker_geometry(imported):
    frames = need(SEQUENCES / 'Crossing')
    pairs, source = mt.crop_pairs(imported, str(frames), 3)
    assert len(pairs) == 3 and 'Crossing' in source
    for pair in pairs:
        assert pair.template.shape == (1, 3, 127, 127)
        assert pair.search.shape == (1, 3, 287, 287)
        assert pair.template.dtype == np.float32
        # The target fills about 127 / sqrt((w + p)(h + p)) of the template side.
        assert 10 < pair.target_wh[0] < 127 and 10 < pair.target_wh[1] < 127


def test_calibration_batches_feed_both_graphs(imported):
    frames = need(SEQUENCES / 'Crossing')
    batches = mt.calibration_batches(imported, str(frames), count=3)
    assert len(batches['template']) == 3 and len(batches['search']) == 3
    assert set(batches['template'][0]) == {'template'}
    feed = batches['search'][0]
    assert set(feed) == {'search', 'zf0', 'zf1'}
    assert feed['zf0'].shape == (1, 256, 4, 4) and feed['search'].shape == (1, 3, 287, 287)


def test_calibration_batches_for_an_upstream_backbone_head_model(tmp_path):
    from siam_tracker_ros.nets.nanotrack_import import import_nanotrack
    spec = import_nanotrack(need(MODELS / 'nanotrack-v2'), tmp_path / 'nano')
    batches = mt.calibration_batches(spec, str(need(SEQUENCES / 'Crossing')), count=2)
    # The dynamic backbone is calibrated at its profile's opt shape, the search crop.
    shapes = [tuple(next(iter(b.values())).shape) for b in batches['backbone']]
    assert shapes == [(1, 3, 255, 255), (1, 3, 255, 255)]
    head = batches['head'][0]
    assert sorted(v.shape for v in head.values()) == [(1, 48, 8, 8), (1, 48, 16, 16)]


def test_tensorrt_commands_refuse_clearly_without_tensorrt(imported, capsys):
    reason = _tensorrt_missing()
    if not reason:
        pytest.skip('TensorRT and a GPU are present here')
    rc = siam_model.main(['check-backend', '--backend', 'tensorrt', str(imported.root)])
    err = capsys.readouterr().err
    assert rc == mt.EXIT_UNAVAILABLE
    assert 'not possible here' in err and 'tensorrt' in err.lower()
    rc = siam_model.main(['build-engine', str(imported.root), '--fp16'])
    err = capsys.readouterr().err
    assert rc == mt.EXIT_UNAVAILABLE and 'TensorRT' in err


def test_build_engine_int8_needs_calibration_frames(imported, capsys):
    rc = siam_model.main(['build-engine', str(imported.root), '--int8'])
    assert rc == mt.EXIT_FAILED
    assert '--calib' in capsys.readouterr().err


def test_siam_model_runs_these_subcommands(imported, capsys):
    assert siam_model.main(['check-backend', '--backend', 'onnxruntime', str(imported.root),
                            '--count', '2']) == mt.EXIT_OK
    assert 'PASS' in capsys.readouterr().out


def test_subcommands_register_on_an_existing_import_command():
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='command', required=True)
    imp = sub.add_parser('import')
    imp_sub = imp.add_subparsers(dest='family', required=True)
    imp_sub.add_parser('nanotrack')
    mt.add_subcommands(sub, imp_sub)
    args = parser.parse_args(['import', 'pysot', '--config', 'c.yaml', '--checkpoint', 'm.pth',
                              '--out', 'o'])
    assert args.handler is mt.run_import_pysot
    args = parser.parse_args(['build-engine', 'M', '--int8', '--calib', 'F'])
    assert (args.precision, args.calib, args.handler) == ('int8', 'F', mt.run_build_engine)
    args = parser.parse_args(['check-backend', '--backend', 'torch', 'M'])
    assert args.handler is mt.run_check_backend and args.precision == 'fp16'
