"""
A NanoTrack v3 fine-tuned with TAFA's temporal shift: export, backends, tracker.

The TAFA module gets non-zero random weights (an untrained one is the identity, which would
make every comparison empty) and is written as siam-train writes modules.pth. The model folder
is made with ``siam-model export --modules``. Tolerances are the export's (nets.module_export:
FEATURE_TOL for features, OUTPUT_TOL for cls/reg, relative to the largest reference value).
Needs the real weights and sequences in ../shared (skipped without them).
"""
from dataclasses import replace
import json
import shutil

import cv2
import needs_torch  # noqa: F401
import numpy as np
import onnx
import pytest
from shared_data import bag_crops, need, SEQUENCES, V3_WEIGHTS
from siam_tracker_ros.backends.base import BackendError, neighbour_features
from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from siam_tracker_ros.backends.torch_backend import TorchBackend
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.config import preset
from siam_tracker_ros.core.manifest import load_manifest, ModelError, write_manifest
from siam_tracker_ros.core.tracker import SiameseTracker
from siam_tracker_ros.core.types import BBox
from siam_tracker_ros.eval.metrics import iou
from siam_tracker_ros.nets.export import export_nanotrack
from siam_tracker_ros.nets.module_export import (check_module_graphs, FEATURE_TOL, module_net,
                                                 OUTPUT_TOL)
from siam_tracker_ros.nets.modules_file import read_modules
from siam_tracker_ros.nets.onnx_inspect import runtime_weight_convs
from siam_tracker_ros.nets.registry import build_net, load_weights
from siam_tracker_ros.nets.train_net import LearnedModules, TrainNet
from siam_tracker_ros.train.config import to_mapping
from siam_tracker_ros.train.trainer import learned_state
import torch

FRAMES = 60


def _tafa_net(modules_path):
    base = load_weights(build_net('nanotrack_v3'), V3_WEIGHTS)
    return module_net(base, read_modules(modules_path, 'nanotrack_v3'), modules_path)


def _write_modules(path, seed=0, **flags):
    modules = LearnedModules(tafa=True, **flags)
    torch.manual_seed(seed)
    net = TrainNet(build_net('nanotrack_v3'), modules)
    with torch.no_grad():
        net.tafa.gate.normal_(0.0, 0.5)
        net.tafa.fuse.weight.normal_(0.0, 0.1)
        if net.st_fusion is not None:
            net.st_fusion.gate.normal_(0.0, 0.3)
    torch.save({'modules': to_mapping(modules), 'state_dict': learned_state(net),
                'arch': 'nanotrack_v3', 'step': 1}, path)
    return path


@pytest.fixture(scope='module')
def modules_pth(tmp_path_factory):
    need(V3_WEIGHTS)
    return _write_modules(tmp_path_factory.mktemp('train') / 'modules.pth')


@pytest.fixture(scope='module')
def tafa_dir(modules_pth, tmp_path_factory):
    out = tmp_path_factory.mktemp('tafa') / 'model'
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(V3_WEIGHTS),
                            '--modules', str(modules_pth), '--out', str(out)]) == 0
    return out


@pytest.fixture(scope='module')
def bag():
    seq = need(SEQUENCES / 'bag')
    frames = sorted((seq / 'img').glob('*.jpg'))[:FRAMES]
    gt = np.array([[float(v) for v in line.split(',')]
                   for line in (seq / 'groundtruth.txt').read_text().splitlines()[:FRAMES]])
    return [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in frames], gt


class Spy:
    """A backend wrapper that records which search runs the tracker asks for."""

    def __init__(self, backend):
        self.inner = backend
        self.name, self.device = backend.name, backend.device
        self.temporal = getattr(backend, 'temporal', 0)
        self.calls = []

    def encode_template(self, crop):
        return self.inner.encode_template(crop)

    def track(self, features, crop):
        self.calls.append('track')
        return self.inner.track(features, crop)

    def track_temporal(self, features, crop, previous):
        self.calls.append(len(previous))
        return self.inner.track_temporal(features, crop, previous)


def _track(spec, backend, frames, gt, count=FRAMES):
    tracker = SiameseTracker(spec, backend)
    boxes = [tracker.init(frames[0], BBox(*gt[0])).box]
    boxes += [tracker.update(frame).box for frame in frames[1:count]]
    return tracker, np.array([[b.x, b.y, b.w, b.h] for b in boxes])


# ------------------------------------------------------------------------------------------
# export

def test_export_writes_a_temporal_tensorrt_safe_search_graph(tafa_dir, v3_export):
    spec = load_manifest(tafa_dir)
    assert spec.temporal_frames == 2 and spec.arch == 'nanotrack_v3'
    assert sorted(spec.files) == ['checkpoint', 'modules', 'search', 'template']
    assert json.loads((tafa_dir / 'manifest.json').read_text())['temporal_frames'] == 2
    assert 'temporal_frames' not in json.loads((v3_export / 'manifest.json').read_text())
    assert load_manifest(v3_export).temporal_frames == 0
    graph = onnx.load(str(spec.path('search'))).graph
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}
    assert [i.name for i in graph.input] == ['search', 'zf', 'xf_prev1', 'xf_prev2']
    assert [o.name for o in graph.output] == ['cls', 'reg', 'xf']
    assert dims['xf_prev1'] == dims['xf_prev2'] == dims['xf'] == [1, 96, 16, 16]
    assert dims['cls'] == [1, 2, 15, 15]
    for role in ('template', 'search'):
        assert runtime_weight_convs(spec.path(role)) == []
    # The template graph is the base one; the search graph is not.
    assert (tafa_dir / 'template.onnx').read_bytes() == (v3_export / 'template.onnx').read_bytes()


def test_onnxruntime_graph_matches_torch_trainnet(tafa_dir, modules_pth):
    net = _tafa_net(modules_pth)
    errors = check_module_graphs(net, tafa_dir / 'template.onnx', tafa_dir / 'search.onnx',
                                 seed=3)
    assert set(errors) == {'cls', 'reg', 'xf'}
    # Against the TrainNet as training runs it: template (B, 1, ...), searches t-2, t-1, t.
    z, x = bag_crops()
    shifted = torch.roll(torch.from_numpy(x), shifts=(9, -5), dims=(2, 3))
    searches = torch.stack([shifted, torch.flip(torch.from_numpy(x), dims=(3,)),
                            torch.from_numpy(x)], dim=1)
    with torch.no_grad():
        ref = net(torch.from_numpy(z)[:, None], searches)
        xf_prev = net.features(searches[0, :2])
    backend = OnnxRuntimeBackend(load_manifest(tafa_dir), threads=1)
    zf = backend.encode_template(z)
    cls, reg, xf = backend.track_temporal(zf, x, (xf_prev[0:1].numpy(), xf_prev[1:2].numpy()))
    for name, got, want, tol in (('cls', cls, ref['cls'], OUTPUT_TOL),
                                 ('reg', reg, ref['reg'], OUTPUT_TOL)):
        want = want.numpy()
        assert np.abs(got - want).max() <= tol * np.abs(want).max(), name
    with torch.no_grad():
        xf_ref = net.features(torch.from_numpy(x)).numpy()
    assert np.abs(xf - xf_ref).max() <= FEATURE_TOL * np.abs(xf_ref).max()
    # The module is not the identity: the base graph scores the same crops otherwise.
    with torch.no_grad():
        base_cls, _ = net.base(torch.from_numpy(z), torch.from_numpy(x))
    assert np.abs(cls - base_cls.numpy()).max() > 0.05 * np.abs(base_cls.numpy()).max()


# ------------------------------------------------------------------------------------------
# backends

def test_neighbour_features_follow_training_rule():
    a, b, c = (np.full((1, 2, 1, 1), v, np.float32) for v in (1, 2, 3))
    assert neighbour_features((), 2) is None
    assert [f[0, 0, 0, 0] for f in neighbour_features((a,), 2)] == [1, 1]
    assert [f[0, 0, 0, 0] for f in neighbour_features((a, b), 2)] == [2, 1]
    assert [f[0, 0, 0, 0] for f in neighbour_features((a, b, c), 2)] == [3, 2]


def test_backends_agree_and_fill_missing_neighbours_like_training(tafa_dir):
    spec = load_manifest(tafa_dir)
    ort_backend = OnnxRuntimeBackend(spec, threads=1)
    torch_backend = TorchBackend(spec)
    assert ort_backend.temporal == torch_backend.temporal == 2
    z, x = bag_crops()
    x2 = np.ascontiguousarray(np.roll(x, 7, axis=3))
    x3 = np.ascontiguousarray(x[..., ::-1])
    zf = ort_backend.encode_template(z)
    _, _, xf2 = ort_backend.track_temporal(zf, x2, ())
    _, _, xf3 = ort_backend.track_temporal(zf, x3, ())
    _, _, xf = ort_backend.track_temporal(zf, x, ())
    for previous in ((), (xf3,), (xf2, xf3)):
        got = ort_backend.track_temporal(zf, x, previous)
        want = torch_backend.track_temporal(zf, x, previous)
        for name, g, w in zip(('cls', 'reg', 'xf'), got, want):
            assert np.abs(g - w).max() <= OUTPUT_TOL * np.abs(w).max(), (name, len(previous))
    # Missing neighbours: nearest available, down to frame t itself.
    first = ort_backend.track_temporal(zf, x, ())
    np.testing.assert_array_equal(first[0], ort_backend.track_temporal(zf, x, (xf, xf))[0])
    np.testing.assert_array_equal(ort_backend.track(zf, x)[0], first[0])
    one = ort_backend.track_temporal(zf, x, (xf3,))
    np.testing.assert_array_equal(one[0], ort_backend.track_temporal(zf, x, (xf3, xf3))[0])
    two = ort_backend.track_temporal(zf, x, (xf2, xf3))
    assert np.abs(two[0] - one[0]).max() > 1e-3   # t-2 matters
    assert np.abs(one[0] - first[0]).max() > 1e-3  # t-1 matters
    np.testing.assert_array_equal(two[2], xf)      # xf: frame t's own, un-shifted


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_temporal_search_graph_replay_on_cuda_matches_eager(tafa_dir):
    """Each number of earlier frames is its own graph; every replay takes the call's inputs."""
    spec = load_manifest(tafa_dir)
    graphed = TorchBackend(spec, device='cuda')
    eager = TorchBackend(spec, device='cuda', cuda_graph=False)
    z, x = bag_crops()
    zf = eager.encode_template(z)
    shifted = [np.ascontiguousarray(np.roll(x, k, axis=3)) for k in (3, 7, 11)]
    earlier = [eager.track_temporal(zf, s, ())[2] for s in shifted]
    for crop in (x, shifted[0]):
        for previous in ((), earlier[:1], earlier[1:]):
            got = graphed.track_temporal(zf, crop, previous)
            want = eager.track_temporal(zf, crop, previous)
            for name, g, w in zip(('cls', 'reg', 'xf'), got, want):
                assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max(), (name, len(previous))
    assert graphed._use_graphs
    assert {key[0] for key in graphed._graphs} == {'template', 'temporal'}


def test_base_model_backends_are_not_temporal(v3_export):
    backend = OnnxRuntimeBackend(load_manifest(v3_export), threads=1)
    assert backend.temporal == 0
    z, x = bag_crops()
    with pytest.raises(BackendError, match='no temporal search graph'):
        backend.track_temporal(backend.encode_template(z), x, ())


# ------------------------------------------------------------------------------------------
# tracker

def test_tracker_keeps_the_main_crops_features_and_differs_from_the_base(tafa_dir, v3_export,
                                                                         bag):
    frames, gt = bag
    spec = load_manifest(tafa_dir)
    spy = Spy(OnnxRuntimeBackend(spec, threads=1))
    tracker, boxes = _track(spec, spy, frames, gt)
    # init's calibration runs frame 0 with no earlier frame; then 1, then 2 earlier frames.
    main = [c for c in spy.calls if c != 'track']
    assert main[:3] == [0, 1, 2] and set(main[3:]) == {2}
    assert len(main) == FRAMES  # one main crop per frame ('default': no re-detection here)
    assert len(tracker.history) == 2 and tracker.history[-1].shape == (1, 96, 16, 16)
    ious = iou(boxes, gt)
    assert (ious >= 0.5).mean() >= 0.9, ious.round(2)
    base_spec = load_manifest(v3_export)
    base_spy = Spy(OnnxRuntimeBackend(base_spec, threads=1))
    base_tracker, base_boxes = _track(base_spec, base_spy, frames, gt)
    assert np.abs(boxes - base_boxes).max() > 1.0
    # Without TAFA nothing temporal runs and no features are kept.
    assert base_tracker.temporal == 0 and len(base_tracker.history) == 0
    assert set(base_spy.calls) == {'track'}
    # A new target forgets the previous frames.
    spy.calls.clear()
    tracker.init(frames[10], BBox(*gt[10]))
    assert len(tracker.history) == 1 and spy.calls[-1] == 0
    tracker.stop()
    assert len(tracker.history) == 0


def test_a_re_centred_crop_gets_the_same_earlier_frames_and_its_features_are_kept(tafa_dir,
                                                                                  bag):
    # motion_recenter at a fiftieth of the target's size re-centres most frames of bag: the
    # second crop runs with the same earlier frames as the first, the history does not grow,
    # and the next frame gets the features of the crop the box came from.
    frames, gt = bag
    spec = load_manifest(tafa_dir)
    tracker = SiameseTracker(spec, OnnxRuntimeBackend(spec, threads=1),
                             spec.tracker.replace(motion_recenter=0.02))
    run_crop, runs = tracker.step.run_crop, {}

    def recording(crop, center, scale_z, features, previous=None):
        search = run_crop(crop, center, scale_z, features, previous)
        if previous is not None:    # a tracking crop (windows and probes have no history)
            runs.setdefault(tracker.frame_index, []).append((previous, search.xf))
        return search

    tracker.step.run_crop = recording
    boxes = [tracker.init(frames[0], BBox(*gt[0])).box]
    boxes += [tracker.update(frame).box for frame in frames[1:]]
    twice = [f for f in range(1, len(frames) - 1) if len(runs[f]) == 2]
    assert len(twice) > 10, twice
    kept = []
    for f in twice:
        (first_previous, first_xf), (second_previous, second_xf) = runs[f]
        assert len(second_previous) == len(first_previous)
        assert all(a is b for a, b in zip(first_previous, second_previous))
        following = runs[f + 1][0][0]
        assert len(following) == min(f + 1, 2)
        assert following[-1] is first_xf or following[-1] is second_xf
        kept.append(following[-1] is second_xf)
    assert any(kept), kept
    ious = iou(np.array([[b.x, b.y, b.w, b.h] for b in boxes]), gt)
    assert (ious >= 0.5).mean() >= 0.9, ious.round(2)


def test_torch_backend_tracks_like_onnxruntime(tafa_dir, bag):
    frames, gt = bag
    spec = load_manifest(tafa_dir)
    count = 8  # the torch backend is slow on a shared CPU
    _, ort_boxes = _track(spec, OnnxRuntimeBackend(spec, threads=1), frames, gt, count)
    _, torch_boxes = _track(spec, TorchBackend(spec), frames, gt, count)
    assert np.abs(ort_boxes - torch_boxes).max() < 0.05


def test_st_fusion_and_tafa_export_and_run_together(tmp_path, bag, capsys):
    modules = _write_modules(tmp_path / 'modules.pth', st_fusion=True, st_memory=2)
    out = tmp_path / 'model'
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(V3_WEIGHTS),
                            '--modules', str(modules), '--out', str(out)]) == 0
    assert ('template-fusion graph of 2 memory slots, with a temporal search graph of 2 '
            'previous frames') in capsys.readouterr().out
    spec = load_manifest(out)
    assert spec.name == 'nanotrack_v3-st-tafa'
    assert spec.temporal_frames == 2 and spec.has_fusion and spec.fusion_memory == 2
    assert sorted(spec.files) == ['checkpoint', 'fusion', 'modules', 'search', 'template']
    ort_backend, torch_backend = OnnxRuntimeBackend(spec, threads=1), TorchBackend(spec)
    for backend in (ort_backend, torch_backend):
        assert backend.temporal == 2 and backend.has_fusion
    z, x = bag_crops()
    zf = ort_backend.encode_template(z)
    zf2 = ort_backend.encode_template(np.ascontiguousarray(z[..., ::-1]))
    fused = ort_backend.fuse_templates(zf, [zf, zf2])
    want = torch_backend.fuse_templates(zf, [zf, zf2])
    assert np.abs(fused[0] - want[0]).max() <= FEATURE_TOL * np.abs(want[0]).max()
    assert np.abs(fused[0] - zf[0]).max() > 1e-3  # the fusion is not the identity
    for got, ref in zip(ort_backend.track_temporal(fused, x, ()),
                        torch_backend.track_temporal(fused, x, ())):
        assert np.abs(got - ref).max() <= OUTPUT_TOL * np.abs(ref).max()
    # The tracker runs both: the fused template and the previous frames' features.
    frames, gt = bag
    tracker = SiameseTracker(spec, ort_backend, spec.tracker.replace(**preset('update')))
    tracker.init(frames[0], BBox(*gt[0]))
    for frame in frames[1:20]:
        tracker.update(frame)
    assert tracker.updater.fusing and len(tracker.history) == 2
    assert np.array_equal(tracker.features[0],
                          ort_backend.fuse_templates(tracker.updater.initial,
                                                     tracker.updater.memory_slots())[0])


# ------------------------------------------------------------------------------------------
# errors

def test_bad_modules_files_are_refused_clearly(tmp_path, modules_pth):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(modules_pth.read_bytes()[:200])
    with pytest.raises(ModelError, match='cannot read learned-modules file .*corrupt'):
        read_modules(corrupt)
    with pytest.raises(ModelError, match='does not exist'):
        read_modules(tmp_path / 'missing.pth')
    torch.save({'weights': {}}, tmp_path / 'plain.pth')
    with pytest.raises(ModelError, match='not a siam-train modules.pth'):
        read_modules(tmp_path / 'plain.pth')
    state = torch.load(modules_pth, weights_only=True)
    state['modules']['feature_modulation'] = True  # settings without the module's state
    torch.save(state, tmp_path / 'fm.pth')
    with pytest.raises(ModelError, match=r'state does not match its settings .*'
                                         r"no state for \['feature_modulation'\]"):
        export_nanotrack(3, V3_WEIGHTS, tmp_path / 'fm', modules=tmp_path / 'fm.pth')
    state = torch.load(modules_pth, weights_only=True)
    state['state_dict'].pop('tafa.gate')
    torch.save(state, tmp_path / 'short.pth')
    with pytest.raises(ModelError, match=r"missing \['tafa.gate'\]"):
        _tafa_net(tmp_path / 'short.pth')
    out = tmp_path / 'out'
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(V3_WEIGHTS),
                            '--modules', str(corrupt), '--out', str(out)]) == 1


def test_broken_temporal_model_folders_are_refused_clearly(tafa_dir, v3_export, tmp_path):
    bad = tmp_path / 'bad'
    shutil.copytree(tafa_dir, bad)
    data = json.loads((bad / 'manifest.json').read_text())
    data['temporal_frames'] = 3
    (bad / 'manifest.json').write_text(json.dumps(data))
    with pytest.raises(ModelError, match='temporal_frames 3 not in'):
        load_manifest(bad)
    # A corrupt search graph: the manifest's sha256 catches it.
    (bad / 'manifest.json').write_text((tafa_dir / 'manifest.json').read_text())
    (bad / 'search.onnx').write_bytes(b'\0' * 100)
    with pytest.raises(ModelError, match='search file .* is corrupt'):
        load_manifest(bad)
    # A manifest that says temporal over a base graph, and the other way round.
    mixed = tmp_path / 'mixed'
    shutil.copytree(v3_export, mixed)
    spec = load_manifest(mixed)
    write_manifest(replace(spec, temporal_frames=2))
    with pytest.raises(BackendError, match='lacks the temporal inputs'):
        OnnxRuntimeBackend(load_manifest(mixed), threads=1)
    shutil.copyfile(tafa_dir / 'search.onnx', mixed / 'search.onnx')
    write_manifest(spec)
    with pytest.raises(BackendError, match='manifest .* has no temporal_frames'):
        OnnxRuntimeBackend(load_manifest(mixed), threads=1)
    # The torch backend needs modules.pth, intact.
    broken = tmp_path / 'broken'
    shutil.copytree(tafa_dir, broken)
    (broken / 'modules.pth').write_bytes(b'not a checkpoint')
    write_manifest(load_manifest(broken, verify=False))
    with pytest.raises(BackendError, match='cannot read learned-modules file'):
        TorchBackend(load_manifest(broken))
