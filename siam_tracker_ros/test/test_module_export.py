"""
NanoTrack v3 with DA attention, feature modulation or layer aggregation: export, run, track.

Each module gets non-zero random weights (an untrained one is the identity: its gates start at
zero, which would make every comparison empty) and is written as siam-train writes
modules.pth; the model folder is made with ``siam-model export --modules``. These modules keep
the base graphs' interfaces (nets.module_export): DA attention and feature modulation change
the search graph, layer aggregation both graphs. Tolerances are the export's (FEATURE_TOL for
features, OUTPUT_TOL for cls/reg, relative to the largest reference value). Needs the real
weights and sequences in ../shared (skipped without them).
"""
from dataclasses import replace

import cv2
import needs_torch  # noqa: F401
import numpy as np
import onnx
import pytest
from shared_data import bag_crops, need, SEQUENCES, V3_WEIGHTS
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from siam_tracker_ros.backends.torch_backend import TorchBackend
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.config import preset
from siam_tracker_ros.core.manifest import load_manifest, ModelError, write_manifest
from siam_tracker_ros.core.tracker import SiameseTracker
from siam_tracker_ros.core.types import BBox
from siam_tracker_ros.eval.metrics import iou
from siam_tracker_ros.nets.export import export_nanotrack
from siam_tracker_ros.nets.module_export import FEATURE_TOL, module_net, OUTPUT_TOL
from siam_tracker_ros.nets.modules_file import read_modules, runtime_part
from siam_tracker_ros.nets.onnx_inspect import runtime_weight_convs
from siam_tracker_ros.nets.registry import build_net, load_weights
from siam_tracker_ros.nets.train_net import LearnedModules, TrainNet
from siam_tracker_ros.train.config import to_mapping
from siam_tracker_ros.train.trainer import learned_state
import torch

FRAMES = 30
MODULES = ('da_attention', 'feature_modulation', 'layer_aggregation')
TAGS = {'da_attention': 'da', 'feature_modulation': 'fm', 'layer_aggregation': 'la'}


def _open(net):
    """Give every switched-on module non-zero random weights (its gates open)."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        if net.da_attention is not None:
            # The attention's output projection starts small: wide gates for a visible effect.
            net.da_attention.search_gate.normal_(0.0, 3.0, generator=gen)
            net.da_attention.template_gate.normal_(0.0, 3.0, generator=gen)
        if net.feature_modulation is not None:
            net.feature_modulation.mlp[2].weight.normal_(0.0, 0.05, generator=gen)
            net.feature_modulation.mlp[2].bias.normal_(0.0, 0.2, generator=gen)
        if net.layer_aggregation is not None:
            net.layer_aggregation.weight.normal_(0.0, 0.5, generator=gen)
            for proj in net.layer_aggregation.proj:
                proj[1].running_mean.normal_(0.0, 0.1, generator=gen)
        if net.tafa is not None:
            net.tafa.gate.normal_(0.0, 0.5, generator=gen)
            net.tafa.fuse.weight.normal_(0.0, 0.1, generator=gen)
        if net.st_fusion is not None:
            net.st_fusion.gate.normal_(0.0, 0.3, generator=gen)


def _write_modules(path, **flags):
    modules = LearnedModules(**flags)
    torch.manual_seed(0)
    net = TrainNet(build_net('nanotrack_v3'), modules)
    _open(net)
    torch.save({'modules': to_mapping(modules), 'state_dict': learned_state(net),
                'arch': 'nanotrack_v3', 'step': 1}, path)
    return path


def _export(modules_path, out):
    assert siam_model.main(['export', 'nanotrack-v3', '--checkpoint', str(V3_WEIGHTS),
                            '--modules', str(modules_path), '--out', str(out)]) == 0
    return out


@pytest.fixture(scope='module', params=MODULES)
def exported(request, tmp_path_factory):
    """Export a model with one module; return (its name, modules.pth, model folder)."""
    need(V3_WEIGHTS)
    tmp = tmp_path_factory.mktemp(request.param)
    modules = _write_modules(tmp / 'modules.pth', **{request.param: True})
    return request.param, modules, _export(modules, tmp / 'model')


@pytest.fixture(scope='module')
def bag():
    seq = need(SEQUENCES / 'bag')
    frames = sorted((seq / 'img').glob('*.jpg'))[:FRAMES]
    gt = np.array([[float(v) for v in line.split(',')]
                   for line in (seq / 'groundtruth.txt').read_text().splitlines()[:FRAMES]])
    return [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in frames], gt


def _net(modules_path):
    base = load_weights(build_net('nanotrack_v3'), V3_WEIGHTS)
    return module_net(base, read_modules(modules_path, 'nanotrack_v3'), modules_path)


def _interface(path):
    graph = onnx.load(str(path)).graph
    return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in list(graph.input) + list(graph.output)]


def _crops():
    """Return a template crop and three search crops of bag's first frame (moved, flipped)."""
    z, x = bag_crops()
    return z, [x, np.ascontiguousarray(np.roll(x, (9, -5), axis=(2, 3))),
               np.ascontiguousarray(x[..., ::-1])]


def _track(spec, backend, frames, gt, config=None):
    tracker = SiameseTracker(spec, backend, config)
    boxes = [tracker.init(frames[0], BBox(*gt[0])).box]
    boxes += [tracker.update(frame).box for frame in frames[1:]]
    return tracker, np.array([[b.x, b.y, b.w, b.h] for b in boxes])


# ------------------------------------------------------------------------------------------
# export

def test_export_keeps_the_interfaces_and_is_tensorrt_safe(exported, v3_export):
    name, _, out = exported
    spec = load_manifest(out)
    assert spec.name == f'nanotrack_v3-{TAGS[name]}'
    assert sorted(spec.files) == ['checkpoint', 'modules', 'search', 'template']
    assert spec.temporal_frames == 0 and not spec.has_fusion
    for role in ('template', 'search'):
        assert _interface(spec.path(role)) == _interface(v3_export / f'{role}.onnx')
        assert runtime_weight_convs(spec.path(role)) == []
    search = onnx.load(str(spec.path('search')))
    # Static shapes: no shape computation is left at run time.
    assert 'Shape' not in {n.op_type for n in search.graph.node}
    assert search.opset_import[0].version == onnx.load(str(v3_export / 'search.onnx')
                                                       ).opset_import[0].version
    assert (out / 'search.onnx').read_bytes() != (v3_export / 'search.onnx').read_bytes()
    # Only layer aggregation changes the template graph.
    same_template = (out / 'template.onnx').read_bytes() == \
        (v3_export / 'template.onnx').read_bytes()
    assert same_template == (name != 'layer_aggregation')


def test_onnxruntime_graphs_match_torch_trainnet(exported):
    name, modules, out = exported
    net = _net(modules)
    assert [n for n in MODULES if getattr(net, n) is not None] == [name]
    backend = OnnxRuntimeBackend(load_manifest(out), threads=1)
    z, searches = _crops()
    zf = backend.encode_template(z)
    with torch.no_grad():
        zf_ref = net.features(torch.from_numpy(z)).numpy()
    assert np.abs(zf[0] - zf_ref).max() <= FEATURE_TOL * np.abs(zf_ref).max()
    for x in searches:
        cls, reg = backend.track(zf, x)
        # The TrainNet as training runs it: templates (B, H, ...), searches (B, F, ...).
        with torch.no_grad():
            ref = net(torch.from_numpy(z)[:, None], torch.from_numpy(x)[:, None])
            base_cls, _ = net.base(torch.from_numpy(z), torch.from_numpy(x))
        for got, want in ((cls, ref['cls'].numpy()), (reg, ref['reg'].numpy())):
            assert np.abs(got - want).max() <= OUTPUT_TOL * np.abs(want).max()
        # The module is not the identity: the base net scores the same crops otherwise (by far
        # more than the tolerance).
        assert np.abs(cls - base_cls.numpy()).max() > 0.02 * np.abs(base_cls.numpy()).max()


# ------------------------------------------------------------------------------------------
# backends and tracker

def test_torch_backend_matches_onnxruntime(exported):
    spec = load_manifest(exported[2])
    ort_backend, torch_backend = OnnxRuntimeBackend(spec, threads=1), TorchBackend(spec)
    assert ort_backend.temporal == torch_backend.temporal == 0
    z, searches = _crops()
    zf = ort_backend.encode_template(z)
    zf_torch = torch_backend.encode_template(z)
    assert np.abs(zf[0] - zf_torch[0]).max() <= FEATURE_TOL * np.abs(zf_torch[0]).max()
    for x in searches:
        for got, want in zip(ort_backend.track(zf, x), torch_backend.track(zf, x)):
            assert np.abs(got - want).max() <= OUTPUT_TOL * np.abs(want).max()


def test_tracker_runs_the_modules_and_differs_from_the_base(exported, v3_export, bag):
    frames, gt = bag
    spec = load_manifest(exported[2])
    _, boxes = _track(spec, OnnxRuntimeBackend(spec, threads=1), frames, gt)
    base_spec = load_manifest(v3_export)
    _, base_boxes = _track(base_spec, OnnxRuntimeBackend(base_spec, threads=1), frames, gt)
    assert np.abs(boxes - base_boxes).max() > 1.0
    # Random (untrained) weights, yet the tracker still follows the bag (base: 0.73).
    assert iou(boxes, gt).mean() >= 0.6, iou(boxes, gt).round(2)


def test_every_module_exports_and_runs_together(tmp_path, bag, capsys):
    flags = dict(st_fusion=True, st_memory=2, tafa=True, **{m: True for m in MODULES},
                 margin_weight=0.5)
    modules = _write_modules(tmp_path / 'modules.pth', **flags)
    spec = load_manifest(_export(modules, tmp_path / 'model'))
    assert spec.name == 'nanotrack_v3-st-la-tafa-fm-da'
    assert spec.temporal_frames == 2 and spec.fusion_memory == 2
    assert 'with a temporal search graph of 2 previous frames' in capsys.readouterr().out
    for role in ('template', 'search', 'fusion'):
        assert runtime_weight_convs(spec.path(role)) == []
    ort_backend, torch_backend = OnnxRuntimeBackend(spec, threads=1), TorchBackend(spec)
    z, (x, x2, x3) = _crops()
    zf = ort_backend.encode_template(z)
    fused = ort_backend.fuse_templates(zf, [zf, ort_backend.encode_template(
        np.ascontiguousarray(z[..., ::-1]))])
    _, _, xf2 = ort_backend.track_temporal(fused, x2, ())
    _, _, xf3 = ort_backend.track_temporal(fused, x3, ())
    for previous in ((), (xf2, xf3)):
        got = ort_backend.track_temporal(fused, x, previous)
        want = torch_backend.track_temporal(fused, x, previous)
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= OUTPUT_TOL * np.abs(w).max()
    frames, gt = bag
    tracker, boxes = _track(spec, ort_backend, frames, gt,
                            spec.tracker.replace(**preset('update')))
    assert tracker.updater.fusing and len(tracker.history) == 2
    assert np.isfinite(boxes).all()


# ------------------------------------------------------------------------------------------
# validation and errors

def test_runtime_part_keeps_every_module_that_runs(tmp_path):
    need(V3_WEIGHTS)
    path = _write_modules(tmp_path / 'modules.pth', da_attention=True, layer_aggregation=True,
                          margin_weight=0.5, adv_dropout_weight=0.1)
    learned = read_modules(path)
    part = runtime_part(learned)
    assert part.runtime == part.graph == ('layer_aggregation', 'da_attention')
    assert part.config.margin_weight == part.config.adv_dropout_weight == 0
    assert set(part.state) == set(learned.state)


def test_bad_module_states_are_refused_clearly(tmp_path):
    need(V3_WEIGHTS)
    # DA trained with another attention width: the state does not fit this net's module.
    net = TrainNet(build_net('nanotrack_v3'), LearnedModules(da_attention=True))
    state = learned_state(net)
    state['da_attention.search_from_template.q.weight'] = torch.zeros(16, 96)
    torch.save({'modules': to_mapping(net.config), 'state_dict': state,
                'arch': 'nanotrack_v3'}, tmp_path / 'da.pth')
    with pytest.raises(ModelError, match=r'does not match the da_attention module .*other '
                                         r'shapes \[.da_attention.search_from_template.q'):
        export_nanotrack(3, V3_WEIGHTS, tmp_path / 'out', modules=tmp_path / 'da.pth')
    # Settings that switch a module on without its state.
    obj = torch.load(tmp_path / 'da.pth', weights_only=True)
    obj['state_dict'] = {}
    torch.save(obj, tmp_path / 'empty.pth')
    with pytest.raises(ModelError, match=r"no state for \['da_attention'\]"):
        export_nanotrack(3, V3_WEIGHTS, tmp_path / 'out', modules=tmp_path / 'empty.pth')
    # A base model folder given a TAFA modules.pth (its manifest says no temporal frames).
    folder = tmp_path / 'mixed'
    spec = export_nanotrack(3, V3_WEIGHTS, folder)
    _write_modules(folder / 'modules.pth', tafa=True)
    write_manifest(replace(spec, files={**spec.files, 'modules': 'modules.pth'}))
    with pytest.raises(BackendError, match=r"holds the modules \['tafa'\], the model runs \[\]"):
        TorchBackend(load_manifest(folder))
