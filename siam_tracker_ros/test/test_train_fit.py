"""
siam-train end to end: it fits, it is deterministic, it resumes, it validates with the tracker.

Trains NanoTrack v3's head (backbone frozen) on two short sequences of ../shared/sequences
(override with SIAM_SHARED); skipped with the reason where that folder is absent. Small batches
and few frames keep every test to seconds on a 2-core CPU.
"""
import csv
import importlib.util
from pathlib import Path

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.cli import siam_train
from siam_tracker_ros.nets.registry import build_net, load_weights, read_state_dict
from siam_tracker_ros.train.config import ConfigError, load_config
from siam_tracker_ros.train.trainer import train
import torch

RECIPE = Path(__file__).resolve().parents[1] / 'config' / 'train' / 'nanotrack_v3_cpu.yaml'
V3 = MODELS / 'nanotrack-v3'
TRAIN_SEQUENCES = ('bag', 'Crossing')
VAL_SEQUENCE = 'David'


def _small(extra=()):
    """
    Return the CPU recipe cut down to two sequences, 12 frames each, batch 4, no validation.

    One torch thread: on a shared 2-core machine more threads than free cores make every
    step several times slower (OpenMP threads wait for each other).
    """
    need(V3 / 'nanotrackv3.pth')
    need(SEQUENCES / 'bag')
    return [f'model={V3}',
            f'data.sources=[{{root: {SEQUENCES}, names: [{", ".join(TRAIN_SEQUENCES)}], '
            'max_frames: 12}]',
            'data.num_workers=0', 'batch_size=4', 'val.sequences=[]', 'tensorboard=false',
            'checkpoint_every=0', 'threads=1', *extra]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fits_two_sequences(tmp_path, capsys):
    """Overfit four fixed pairs: the loss must fall by at least 80 %."""
    out = tmp_path / 'fit'
    overrides = _small(['data.unique_pairs=4', 'steps=60', 'optim.optimizer=adamw',
                        'optim.lr=0.001', 'optim.schedule=constant', 'optim.warmup_steps=0',
                        'tensorboard=true'])
    argv = [str(RECIPE), '--out', str(out), '--quiet']
    for item in overrides:
        argv += ['--set', item]
    assert siam_train.main(argv) == 0
    assert 'siam-train: 60 steps' in capsys.readouterr().out
    rows = _csv(out / 'train_log.csv')
    assert [int(r['step']) for r in rows] == list(range(1, 61))
    assert list(rows[0]) == ['step', 'lr', 'loss', 'cls', 'reg', 'seconds']
    for r in rows:
        assert float(r['loss']) == pytest.approx(float(r['cls']) + float(r['reg']), rel=1e-5)
    first = float(rows[0]['loss'])
    last = sum(float(r['loss']) for r in rows[-5:]) / 5
    print(f'fit: loss {first:.4f} -> {last:.4f} (mean of the last 5 steps)')
    assert last <= 0.2 * first, f'loss fell only from {first:.4f} to {last:.4f}'

    trained = load_weights(build_net('nanotrack_v3'), out / 'model.pth', strict=True)
    start = read_state_dict(V3 / 'nanotrackv3.pth')
    state = trained.state_dict()
    for key, value in state.items():
        if key.startswith('backbone.') or key.startswith('neck.'):
            assert torch.equal(value, start[key]), f'{key} changed but is frozen'
    assert not torch.equal(state['ban_head.cls_logits.0.weight'],
                           start['ban_head.cls_logits.0.weight'])
    modules = torch.load(out / 'modules.pth', weights_only=True)
    assert modules['state_dict'] == {} and modules['arch'] == 'nanotrack_v3'
    _check_curves(out, tmp_path, capsys)
    if importlib.util.find_spec('tensorboard') is None:
        return
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))


def _check_curves(run, tmp_path, capsys):
    """Check the run's learning curves; --curves overlays runs and refuses a non-run."""
    cv2 = pytest.importorskip('cv2')
    pytest.importorskip('matplotlib')
    own = cv2.imread(str(run / 'learning_curves.png'))
    assert own is not None and own.shape == (420, 1100, 3)
    assert len(np.unique(own.reshape(-1, 3), axis=0)) > 50     # drawn, not blank
    png = tmp_path / 'ablation.png'
    assert siam_train.main(['--curves', str(png), '--run', f'a={run}', '--run', str(run)]) == 0
    assert str(png) in capsys.readouterr().out and cv2.imread(str(png)) is not None
    assert siam_train.main(['--curves', str(png), '--run', str(tmp_path / 'none')]) == 2
    assert 'no train_log.csv' in capsys.readouterr().err


def test_same_seed_same_losses_whatever_the_workers(tmp_path):
    overrides = _small(['steps=3', 'seed=5'])
    a = train(load_config(None, overrides), tmp_path / 'a', progress=False)
    b = train(load_config(None, overrides + ['data.num_workers=2']), tmp_path / 'b',
              progress=False)
    c = train(load_config(None, overrides + ['seed=6']), tmp_path / 'c', progress=False)
    losses = [[r[k] for k in ('loss', 'cls', 'reg')] for r in a.losses]
    assert losses == [[r[k] for k in ('loss', 'cls', 'reg')] for r in b.losses]
    assert losses != [[r[k] for k in ('loss', 'cls', 'reg')] for r in c.losses]


def test_resume_continues_exactly(tmp_path):
    overrides = _small(['steps=6', 'checkpoint_every=3', 'optim.optimizer=adamw',
                        'optim.lr=0.001', 'optim.warmup_steps=2'])
    cfg = load_config(None, overrides)
    whole = train(cfg, tmp_path / 'whole', progress=False)
    checkpoint = tmp_path / 'whole' / 'checkpoints' / 'step_0000003.pt'
    assert checkpoint.is_file() and whole.checkpoint.name == 'step_0000006.pt'
    resumed = train(cfg, tmp_path / 'resumed', resume=checkpoint, progress=False)
    assert [r['step'] for r in resumed.losses] == [4, 5, 6]
    assert [r['loss'] for r in resumed.losses] == [r['loss'] for r in whole.losses[3:]]
    assert [r['lr'] for r in resumed.losses] == [r['lr'] for r in whole.losses[3:]]
    a = read_state_dict(tmp_path / 'whole' / 'model.pth')
    b = read_state_dict(tmp_path / 'resumed' / 'model.pth')
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Resuming in place keeps the log's first steps and continues it.
    longer = load_config(None, overrides + ['steps=7'])
    train(longer, tmp_path / 'whole', resume='auto', progress=False)
    assert [int(r['step']) for r in _csv(tmp_path / 'whole' / 'train_log.csv')] == \
        list(range(1, 8))
    with pytest.raises(ValueError, match='already holds a training run'):
        train(cfg, tmp_path / 'whole', progress=False)


def test_learned_modules_train_and_log_their_terms(tmp_path):
    on = ['modules.margin_weight=0.5', 'modules.st_fusion=true', 'modules.st_memory=2',
          'modules.tafa=true', 'modules.da_attention=true', 'modules.feature_modulation=true',
          'modules.adv_dropout_weight=0.5', 'modules.layer_aggregation=true']
    cfg = load_config(None, _small(['steps=2', 'batch_size=2', *on]))
    assert (cfg.history, cfg.frames) == (3, 3)
    result = train(cfg, tmp_path / 'modules', progress=False)
    rows = _csv(tmp_path / 'modules' / 'train_log.csv')
    assert list(rows[0]) == ['step', 'lr', 'loss', 'cls', 'reg', 'margin', 'adv_kl', 'seconds']
    for r in rows:
        terms = sum(float(r[k]) for k in ('cls', 'reg', 'margin', 'adv_kl'))
        assert float(r['loss']) == pytest.approx(terms, rel=1e-5)
    modules = torch.load(result.modules, weights_only=True)
    prefixes = {k.split('.')[0] for k in modules['state_dict']}
    assert prefixes == {'st_fusion', 'tafa', 'feature_modulation', 'da_attention',
                        'layer_aggregation'}
    assert modules['modules']['st_memory'] == 2
    load_weights(build_net('nanotrack_v3'), result.weights, strict=True)


def test_validation_runs_the_real_tracker(tmp_path, model_cache, monkeypatch):
    """Step 0's validation AUC is what the torch-backend tracker gets from the model folder."""
    from siam_tracker_ros.core.config import preset
    from siam_tracker_ros.eval.metrics import evaluate_sequence
    from siam_tracker_ros.eval.runner import run_tracker
    from siam_tracker_ros.factory import load_tracker
    from siam_tracker_ros.io.sequences import load_frames, load_sequence, Sequence

    seq_dir = need(SEQUENCES / VAL_SEQUENCE)
    overrides = _small(['steps=2', f'val.sequences=[{seq_dir}]', 'val.max_frames=8',
                        'val.every=1'])
    result = train(load_config(None, overrides), tmp_path / 'val', progress=False)
    rows = _csv(tmp_path / 'val' / 'val_log.csv')
    assert [int(r['step']) for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ['step', 'auc', VAL_SEQUENCE]
    assert [r['auc'] for r in result.val] == [float(r['auc']) for r in rows]

    monkeypatch.setenv('SIAM_MODEL_CACHE', str(model_cache))
    seq = load_sequence(seq_dir)
    seq = Sequence(name=seq.name, frames=seq.frames[:8], gt=seq.gt[:8])
    tracker = load_tracker(V3, backend='torch', **preset('plain'))
    run = run_tracker(tracker, load_frames(seq), seq)
    auc = evaluate_sequence(run.boxes, seq.gt).auc
    assert 0.0 < auc <= 1.0
    assert float(rows[0]['auc']) == pytest.approx(auc, abs=1e-12)


def test_validation_runs_the_learned_modules(tmp_path):
    """
    With ST fusion, TAFA and feature modulation on, validation tracks with them.

    The torch backend runs them, as an exported model, from the validation folder's checkpoint
    and modules.pth (no ONNX); the margin loss (training only) stays out. Opening the modules'
    gates (zero in a fresh module) moves the boxes, and the validation AUC is the one of the
    tracker on that backend.
    """
    from siam_tracker_ros.backends.torch_backend import TorchBackend
    from siam_tracker_ros.core.tracker import SiameseTracker
    from siam_tracker_ros.eval.metrics import evaluate_sequence
    from siam_tracker_ros.eval.runner import run_tracker
    from siam_tracker_ros.io.sequences import load_frames
    from siam_tracker_ros.nets.train_net import TrainNet
    from siam_tracker_ros.train.trainer import resolve_base, Validator

    seq_dir = need(SEQUENCES / VAL_SEQUENCE)
    cfg = load_config(None, _small([f'val.sequences=[{seq_dir}]', 'val.max_frames=8',
                                    'val.preset=update', 'modules.st_fusion=true',
                                    'modules.st_memory=2', 'modules.tafa=true',
                                    'modules.feature_modulation=true',
                                    'modules.margin_weight=0.5']))
    base_model = resolve_base(cfg.model, cfg.arch)
    base = load_weights(build_net(base_model.arch), base_model.checkpoint)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TrainNet(base, cfg.modules).eval()
    validator = Validator(cfg, base_model, tmp_path)
    seq = validator.sequences[0]

    def track():
        spec = validator.model(net)
        backend = TorchBackend(spec)
        tracker = SiameseTracker(spec, backend, validator.tracker_config)
        run = run_tracker(tracker, load_frames(seq), seq, 'val')
        return spec, backend, tracker, np.asarray(run.boxes)

    spec, backend, tracker, closed = track()
    assert sorted(spec.files) == ['checkpoint', 'modules']
    assert not list((tmp_path / 'val').glob('*.onnx'))
    assert backend.has_fusion and backend.temporal == 2
    assert tracker.updater.fusing and len(tracker.history) == 2
    saved = torch.load(tmp_path / 'val' / 'modules.pth', weights_only=True)
    assert {k.split('.')[0] for k in saved['state_dict']} == {'st_fusion', 'tafa',
                                                              'feature_modulation'}
    assert saved['modules']['feature_modulation'] and saved['modules']['margin_weight'] == 0
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.st_fusion.gate.normal_(0.0, 0.3, generator=gen)
        net.tafa.gate.normal_(0.0, 0.5, generator=gen)
        net.tafa.fuse.weight.normal_(0.0, 0.1, generator=gen)
        net.feature_modulation.mlp[2].weight.normal_(0.0, 0.02, generator=gen)
    scores = validator.run(net)
    _, _, _, opened = track()
    assert np.abs(opened - closed).max() > 0.5
    auc = evaluate_sequence(opened, seq.gt).auc
    assert scores[VAL_SEQUENCE] == pytest.approx(auc, abs=1e-12)


def test_cli_reports_bad_settings(tmp_path, capsys):
    assert siam_train.main(['--set', 'model=', '--out', str(tmp_path), '--quiet']) == 2
    assert 'model is empty' in capsys.readouterr().err
    assert siam_train.main(['--set', 'optim.lrate=1', '--out', str(tmp_path)]) == 2
    assert 'unknown setting optim.lrate' in capsys.readouterr().err
    (tmp_path / 'rpn.pth').write_bytes(b'')
    argv = ['--set', f'model={tmp_path / "rpn.pth"}', '--set', 'arch=siamrpn_alex']
    assert siam_train.main(argv + ['--out', str(tmp_path)]) == 2
    assert 'cannot read checkpoint' in capsys.readouterr().err
    argv = ['--set', f'model={tmp_path / "rpn.pth"}', '--set', 'arch=siamfc']
    assert siam_train.main(argv + ['--out', str(tmp_path)]) == 2
    assert 'trains NanoTrack (nanotrack_v1' in capsys.readouterr().err
    need(V3 / 'nanotrackv3.pth')
    argv = ['--set', f'model={V3}', '--set', 'data.sources=[]', '--out', str(tmp_path)]
    assert siam_train.main(argv) == 2
    assert 'data.sources is empty' in capsys.readouterr().err


def test_module_lr_scale_moves_only_the_modules_rate(tmp_path):
    """
    optim.module_lr_scale scales the learned modules' steps, never the base head's.

    One step: the zero-initialised fusion is the identity in both runs, so the gradients are
    the same and only the step sizes differ.
    """
    states = {}
    for scale in (1.0, 1e-6):
        cfg = load_config(None, _small(['steps=1', 'batch_size=2', 'modules.st_fusion=true',
                                        'modules.st_memory=1', 'optim.warmup_steps=0',
                                        f'optim.module_lr_scale={scale}']))
        result = train(cfg, tmp_path / str(scale), progress=False)
        states[scale] = (read_state_dict(result.weights),
                         torch.load(result.modules, weights_only=True)['state_dict'])
    (head_a, mods_a), (head_b, mods_b) = states[1.0], states[1e-6]
    for k in head_a:
        assert torch.equal(head_a[k], head_b[k]), k    # the head takes the same steps
    gate = next(k for k in mods_a if k.endswith('gate'))
    assert float(mods_a[gate].abs().max()) > 1e3 * float(mods_b[gate].abs().max())


def test_freeze_head_trains_only_the_modules(tmp_path):
    cfg = load_config(None, _small(['steps=2', 'batch_size=2', 'freeze_head=true',
                                    'modules.st_fusion=true', 'modules.st_memory=1',
                                    'optim.warmup_steps=0']))
    result = train(cfg, tmp_path / 'modules-only', progress=False)
    trained, start = read_state_dict(result.weights), read_state_dict(V3 / 'nanotrackv3.pth')
    assert trained.keys() == start.keys() and all(torch.equal(trained[k], start[k])
                                                  for k in start)
    gate = torch.load(result.modules, weights_only=True)['state_dict']['st_fusion.gate']
    assert float(gate.abs().max()) > 0
    with pytest.raises(ConfigError, match='nothing to train'):
        train(load_config(None, _small(['steps=1', 'freeze_head=true'])), tmp_path / 'none',
              progress=False)
