"""
A fine-tuned model with learned ST template fusion: export, every backend, the tracker, the CLI.

The model is NanoTrack v3's published weights plus an ST fusion module with random non-zero
weights (an untrained module is the identity, which would make every comparison empty),
saved as a siam-train run saves them (model.pth + modules.pth) and exported with
``siam-model export --modules``. Tolerances: FUSION_TOL (2e-4 of the largest reference value)
between ONNX Runtime and torch, as for the split export's template features. Needs the
reference weights and sequences in ../shared (override with SIAM_SHARED); skipped without.
"""
from dataclasses import asdict
import json
import shutil

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.backends.base import BackendError, runs_fusion
from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from siam_tracker_ros.backends.torch_backend import TorchBackend
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.config import preset
from siam_tracker_ros.core.manifest import load_manifest, MANIFEST_NAME, ModelError, \
    write_manifest
from siam_tracker_ros.core.types import BBox
from siam_tracker_ros.factory import load_tracker
from siam_tracker_ros.io.sequences import iter_frames, load_sequence
from siam_tracker_ros.nets.export import export_nanotrack
from siam_tracker_ros.nets.fusion_export import FUSION_TOL
from siam_tracker_ros.nets.onnx_inspect import runtime_weight_convs
from siam_tracker_ros.nets.registry import build_net, load_weights
from siam_tracker_ros.nets.train_net import LearnedModules, TrainNet
from siam_tracker_ros.train.trainer import learned_state
import torch
import yaml

V3 = MODELS / 'nanotrack-v3' / 'nanotrackv3.pth'
MEMORY = 3
FRAMES = 60


def _run_folder(root, modules: LearnedModules, seed: int = 0, with_settings: bool = True):
    """Write model.pth + modules.pth as siam-train does; return (folder, TrainNet)."""
    base = load_weights(build_net('nanotrack_v3'), need(V3))
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the module's own initialisation
        net = TrainNet(base, modules).eval()
    if net.st_fusion is not None:  # random like a trained one: the gate opened (not zero)
        with torch.no_grad():
            net.st_fusion.gate.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    root.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': base.state_dict(), 'arch': 'nanotrack_v3', 'step': 1},
               root / 'model.pth')
    saved = {'state_dict': learned_state(net), 'arch': 'nanotrack_v3', 'step': 1}
    if with_settings:
        saved['modules'] = asdict(modules)
    torch.save(saved, root / 'modules.pth')
    return root, net


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root, net = _run_folder(tmp_path_factory.mktemp('run') / 'run',
                            LearnedModules(st_fusion=True, st_memory=MEMORY, margin_weight=1.0))
    return root, net


@pytest.fixture(scope='module')
def fused_spec(trained, tmp_path_factory):
    root, _ = trained
    return export_nanotrack(3, root / 'model.pth', tmp_path_factory.mktemp('fused') / 'model',
                            modules=root / 'modules.pth')


@pytest.fixture(scope='module')
def base_spec(trained, tmp_path_factory):
    root, _ = trained
    return export_nanotrack(3, root / 'model.pth', tmp_path_factory.mktemp('base') / 'model')


@pytest.fixture(scope='module')
def sequence():
    seq = load_sequence(need(SEQUENCES / 'bag'))
    return list(iter_frames(seq.frames[:FRAMES])), seq.gt[:FRAMES]


def _iou(box, gt):
    x1, y1 = max(box.x, gt[0]), max(box.y, gt[1])
    x2, y2 = min(box.x + box.w, gt[0] + gt[2]), min(box.y + box.h, gt[1] + gt[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (box.w * box.h + gt[2] * gt[3] - inter)


def _track(tracker, frames, gt):
    tracker.init(frames[0], BBox.from_sequence(gt[0]))
    return [tracker.update(f) for f in frames[1:]]


def _crops(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (1, 3, 127, 127)).astype(np.float32) for _ in range(4)]


# ------------------------------------------------------------------------------------------
# export

def test_export_lists_the_fusion_graph(fused_spec, base_spec):
    assert fused_spec.has_fusion and fused_spec.fusion_memory == MEMORY
    assert sorted(fused_spec.files) == ['checkpoint', 'fusion', 'modules', 'search',
                                        'template']
    data = json.loads((fused_spec.root / MANIFEST_NAME).read_text())
    assert data['fusion'] == {'memory': MEMORY}
    for role in ('template', 'search', 'fusion'):
        assert runtime_weight_convs(fused_spec.path(role)) == [], role
    # Without --modules: the plain split export, no fusion entry; same base graphs.
    assert not base_spec.has_fusion and base_spec.fusion_memory == 0
    assert 'fusion' not in json.loads((base_spec.root / MANIFEST_NAME).read_text())
    for role in ('template', 'search'):
        assert fused_spec.sha256[role] == base_spec.sha256[role]


def test_manifest_fusion_entry_is_checked(fused_spec, tmp_path):
    copy = tmp_path / 'model'
    shutil.copytree(fused_spec.root, copy)
    mpath = copy / MANIFEST_NAME
    data = json.loads(mpath.read_text())
    del data['fusion']
    mpath.write_text(json.dumps(data))
    with pytest.raises(ModelError, match='"fusion" entry with the memory size'):
        load_manifest(copy)
    data['fusion'] = {'memory': 3}
    del data['files']['fusion']
    mpath.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="no 'fusion' file"):
        load_manifest(copy)


# ------------------------------------------------------------------------------------------
# backends

def test_onnxruntime_fusion_matches_torch_and_the_torch_backend(fused_spec, trained):
    _, net = trained
    ort_backend = OnnxRuntimeBackend(fused_spec, threads=1)
    torch_backend = TorchBackend(fused_spec)
    assert runs_fusion(ort_backend) and runs_fusion(torch_backend)
    crops = _crops()
    feats = [ort_backend.encode_template(c) for c in crops]
    got = ort_backend.fuse_templates(feats[0], feats[1:])
    with torch.no_grad():
        ref = net.st_fusion(torch.from_numpy(feats[0][0]),
                            torch.from_numpy(np.stack([f[0] for f in feats[1:]], axis=1)))
    ref = ref.numpy()
    assert len(got) == 1 and got[0].shape == ref.shape == (1, 96, 8, 8)
    err, peak = float(np.abs(got[0] - ref).max()), float(np.abs(ref).max())
    print(f'ORT fusion vs torch STFusion: max abs diff {err:.3g} (peak {peak:.3g})')
    assert err <= FUSION_TOL * peak
    # The module really changes the features (measured: by up to 0.27, 5 % of the peak).
    change = float(np.abs(ref - feats[0][0]).max())
    print(f'the fusion changes the initial features by up to {change:.3g}')
    assert change > 0.02 * peak
    # The torch backend: its own encoder and fusion, same results.
    tfeats = [torch_backend.encode_template(c) for c in crops]
    tgot = torch_backend.fuse_templates(tfeats[0], tfeats[1:])
    err = float(np.abs(tgot[0] - got[0]).max())
    print(f'torch backend vs ORT backend fusion: max abs diff {err:.3g}')
    assert err <= FUSION_TOL * peak
    search = np.random.default_rng(1).uniform(0, 255, (1, 3, 255, 255)).astype(np.float32)
    for a, b in zip(ort_backend.track(got, search), torch_backend.track(tgot, search)):
        assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
    with pytest.raises(BackendError, match='memory slots'):
        ort_backend.fuse_templates(feats[0], feats[1:3])


def test_backends_without_a_fusion_graph_say_so(base_spec):
    for backend in (OnnxRuntimeBackend(base_spec, threads=1), TorchBackend(base_spec)):
        assert not backend.has_fusion
        feats = backend.encode_template(_crops()[0])
        with pytest.raises(BackendError, match='no template-fusion graph'):
            backend.fuse_templates(feats, [feats] * MEMORY)


def test_a_corrupt_fusion_graph_is_reported(fused_spec, tmp_path):
    copy = tmp_path / 'model'
    shutil.copytree(fused_spec.root, copy)
    (copy / 'fusion.onnx').write_bytes(b'not an onnx graph')
    with pytest.raises(ModelError, match='fusion file .* is corrupt or changed'):
        load_manifest(copy)
    spec = load_manifest(copy, verify=False)
    with pytest.raises(BackendError, match='cannot load .*fusion.onnx'):
        OnnxRuntimeBackend(spec, threads=1)
    # A graph whose memory size is not the manifest's.
    shutil.copyfile(fused_spec.path('fusion'), copy / 'fusion.onnx')
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data['fusion'] = {'memory': MEMORY + 1}
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    write_manifest(load_manifest(copy, verify=False))
    with pytest.raises(BackendError, match='memory slots'):
        OnnxRuntimeBackend(load_manifest(copy), threads=1)
    # A modules.pth that is not one.
    (copy / 'modules.pth').write_bytes(b'garbage')
    spec = load_manifest(copy, verify=False)
    with pytest.raises(BackendError, match='template fusion .*cannot read'):
        TorchBackend(spec)


# ------------------------------------------------------------------------------------------
# the tracker

def test_tracker_fuses_templates_on_updates(fused_spec, base_spec, sequence):
    frames, gt = sequence
    update = preset('update')
    fused = load_tracker(fused_spec, backend='onnxruntime', **update)
    blend = load_tracker(base_spec, backend='onnxruntime', **update)
    assert fused.updater.fusing and blend.updater.fuse is None
    results = _track(fused, frames, gt)
    base_results = _track(blend, frames, gt)
    up = fused.updater
    assert up.updates >= 2 and blend.updater.updates >= 1
    # The template is fuse(initial, memory), FIFO of the accepted samples, initial-filled.
    assert len(up.memory) == min(up.updates, MEMORY)
    want = fused.backend.fuse_templates(up.initial, up.memory_slots())
    assert np.array_equal(fused.features[0], want[0])
    assert not np.allclose(fused.features[0], blend.features[0], atol=1e-3)
    assert np.array_equal(up.initial[0], blend.updater.initial[0])  # same template graph
    ious = np.array([_iou(r.box, g) for r, g in zip(results, gt[1:])])
    base_ious = np.array([_iou(r.box, g) for r, g in zip(base_results, gt[1:])])
    print(f'bag {FRAMES} frames, update preset: mean IoU fused {ious.mean():.3f}, '
          f'blend {base_ious.mean():.3f}; {up.updates} fusion updates')
    assert ious[::10].min() > 0.5 and ious.mean() > 0.6
    # Fusion off (update disabled at run time): back to the initial template.
    fused.set_config(fused.config.replace(update_interval=0))
    assert fused.features is fused.updater.initial


def test_without_fusion_the_tracker_is_unchanged(fused_spec, base_spec, sequence):
    """The 'plain' preset never fuses; a fusion-less model keeps the moving average."""
    frames, gt = sequence
    plain = preset('plain')
    a = [r.box.as_tuple() for r in _track(load_tracker(fused_spec, backend='onnxruntime',
                                                       **plain), frames[:30], gt)]
    b = [r.box.as_tuple() for r in _track(load_tracker(base_spec, backend='onnxruntime',
                                                       **plain), frames[:30], gt)]
    assert a == b
    blend = load_tracker(base_spec, backend='onnxruntime', **preset('update'))
    _track(blend, frames, gt)
    up = blend.updater
    w = np.float32(up.init_weight)
    assert up.updates >= 1 and not up.memory
    assert np.array_equal(blend.features[0], w * up.initial[0] + (1 - w) * up.accumulated[0])


# ------------------------------------------------------------------------------------------
# siam-model export --modules

def test_cli_export_with_modules(trained, tmp_path, capsys):
    root, _ = trained
    out = tmp_path / 'model'
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(root / 'model.pth'),
                            '--modules', str(root / 'modules.pth'), '--out', str(out)]) == 0
    assert 'template-fusion graph of 3 memory slots' in capsys.readouterr().out
    spec = load_manifest(out)
    assert spec.has_fusion and spec.fusion_memory == MEMORY


def test_cli_export_reads_old_modules_files_with_their_run_config(tmp_path, capsys):
    modules = LearnedModules(st_fusion=True, st_memory=2)
    root, _ = _run_folder(tmp_path / 'run', modules, with_settings=False)
    args = ['export', 'nanotrack-v3', '--checkpoint', str(root / 'model.pth'), '--modules',
            str(root / 'modules.pth'), '--out', str(tmp_path / 'model')]
    assert siam_model.main(args) == 1
    assert 'does not record its module settings' in capsys.readouterr().err
    (root / 'config.yaml').write_text(yaml.safe_dump({'modules': asdict(modules)}))
    assert siam_model.main(args) == 0
    spec = load_manifest(tmp_path / 'model')
    assert spec.fusion_memory == 2
    assert TorchBackend(spec).has_fusion  # the folder's modules.pth now holds its settings


def test_cli_export_refuses_settings_without_their_state(tmp_path, capsys):
    root, _ = _run_folder(tmp_path / 'run', LearnedModules(st_fusion=True))
    saved = torch.load(root / 'modules.pth', weights_only=True)
    saved['modules']['da_attention'] = True  # switched on, but no da_attention.* state
    torch.save(saved, root / 'modules.pth')
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(root / 'model.pth'),
                            '--modules', str(root / 'modules.pth'), '--out',
                            str(tmp_path / 'model')]) == 1
    err = capsys.readouterr().err
    assert 'does not match its settings' in err and "no state for ['da_attention']" in err
    assert not (tmp_path / 'model').exists()


def test_training_only_modules_export_as_the_plain_net(tmp_path):
    root, _ = _run_folder(tmp_path / 'run', LearnedModules(margin_weight=1.0,
                                                           adv_dropout_weight=0.5))
    spec = export_nanotrack(3, root / 'model.pth', tmp_path / 'model',
                            modules=root / 'modules.pth')
    assert not spec.has_fusion and sorted(spec.files) == ['checkpoint', 'search', 'template']
