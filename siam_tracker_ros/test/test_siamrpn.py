"""
SiamRPN++ (pysot-compatible) nets: checkpoint keys, strict loading, split export, tracking.

No pysot weights are reachable here, so checkpoints are made by the tests in pysot's format
from randomly initialised nets (activations kept O(1), see ``pysot_import.randomise``).
Each arch is exported once for the module. ResNet-50 is exported with a 167 search crop (the
smallest whose search features stay >= 20 wide, so pysot's AdjustLayer does not crop them;
score map 14x14) instead of 255, to keep the test time small; alex (287) and mobilev2 (255)
use their config sizes.

Tolerances: ONNX Runtime vs PyTorch max abs error <= 1e-4 + 1e-3 * max|PyTorch| on every
output (float32; BatchNorm is folded into the convs on export and the correlation sums
in another order; ResNet-50 template kernels differ by up to ~2e-4 * max).
"""
import needs_torch  # noqa: F401
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.core.manifest import load_manifest, ModelError
from siam_tracker_ros.nets import pysot_import as P
from siam_tracker_ros.nets import siamrpn as S
from siam_tracker_ros.nets.export import runtime_weight_convs
from siam_tracker_ros.nets.ops import xcorr_depthwise_slices
from siam_tracker_ros.nets.registry import build_net, load_weights, read_state_dict
import torch

ARCHS = ('siamrpn_alex', 'siamrpn_mobilev2', 'siamrpn_r50')
GEOMETRY = {'siamrpn_alex': {}, 'siamrpn_mobilev2': {}, 'siamrpn_r50': {'instance_size': 167}}
CONFIG_DIRS = {'siamrpn_alex': 'siamrpn_alex_dwxcorr',
               'siamrpn_mobilev2': 'siamrpn_mobilev2_l234_dwxcorr',
               'siamrpn_r50': 'siamrpn_r50_l234_dwxcorr'}
ATOL = 1e-4
RTOL = 1e-3


class _Exports(dict):
    """arch -> (spec, net), exported on first use (a -k selection exports only what it uses)."""

    def __init__(self, tmp_path_factory) -> None:
        super().__init__()
        self._tmp = tmp_path_factory

    def __missing__(self, arch):
        root = self._tmp.mktemp(arch)
        self[arch] = P.random_model(arch, root / 'model', seed=1, **GEOMETRY[arch])
        return self[arch]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Map arch -> (spec, net): one random model directory per arch, exported once."""
    return _Exports(tmp_path_factory)


def _config_path(arch):
    return need(MODELS / 'pysot-configs-no-weights' / CONFIG_DIRS[arch] / 'config.yaml')


# ------------------------------------------------------------------------------------------
# names and shapes of pysot checkpoints

# (key, shape) pairs a pysot checkpoint of each arch holds, derived from the configs.
PYSOT_KEYS = {
    'siamrpn_alex': [
        ('backbone.features.0.weight', (96, 3, 11, 11)),
        ('backbone.features.14.weight', (256, 384, 3, 3)),
        ('backbone.features.15.running_var', (256,)),
        ('rpn_head.cls.conv_kernel.0.weight', (256, 256, 3, 3)),
        ('rpn_head.cls.head.3.weight', (10, 256, 1, 1)),
        ('rpn_head.loc.head.3.bias', (20,)),
    ],
    'siamrpn_mobilev2': [
        ('backbone.layer0.0.weight', (44, 3, 3, 3)),
        ('backbone.layer1.0.conv.0.weight', (44, 44, 1, 1)),
        ('backbone.layer7.0.conv.6.weight', (448, 1344, 1, 1)),
        ('backbone.layer7.0.conv.7.running_var', (448,)),
        ('neck.downsample2.downsample.0.weight', (256, 44, 1, 1)),
        ('neck.downsample3.downsample.0.weight', (256, 134, 1, 1)),
        ('neck.downsample4.downsample.1.running_mean', (256,)),
        ('rpn_head.rpn2.cls.conv_search.0.weight', (256, 256, 3, 3)),
        ('rpn_head.rpn4.loc.head.3.weight', (20, 256, 1, 1)),
    ],
    'siamrpn_r50': [
        ('backbone.conv1.weight', (64, 3, 7, 7)),
        ('backbone.layer1.0.downsample.0.weight', (256, 64, 1, 1)),
        ('backbone.layer2.0.downsample.0.weight', (512, 256, 3, 3)),  # pysot: 3x3, pad 0
        ('backbone.layer3.0.downsample.0.weight', (1024, 512, 3, 3)),
        ('backbone.layer4.2.conv3.weight', (2048, 512, 1, 1)),
        ('neck.downsample4.downsample.0.weight', (256, 2048, 1, 1)),
        ('rpn_head.rpn3.cls.head.0.weight', (256, 256, 1, 1)),
        ('rpn_head.cls_weight', (3,)),
        ('rpn_head.loc_weight', (3,)),
    ],
}


@pytest.mark.parametrize('arch', ARCHS)
def test_state_dict_has_pysot_names_and_shapes(arch):
    state = S.build(arch).state_dict()
    for key, shape in PYSOT_KEYS[arch]:
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith(('module.', 'net.')) for k in state)
    if arch == 'siamrpn_mobilev2':
        assert 'rpn_head.cls_weight' not in state  # weighted: False in its config
    if arch == 'siamrpn_alex':
        assert not any(k.startswith('neck.') for k in state)  # ADJUST: False


@pytest.mark.parametrize('arch', ARCHS)
def test_config_files_build_the_registered_nets(arch):
    cfg = S.load_config(_config_path(arch))
    assert cfg.arch == arch
    from_config = S.SiamRPNpp(cfg).state_dict()
    registered = build_net(arch).state_dict()
    assert list(from_config) == list(registered)
    assert all(from_config[k].shape == registered[k].shape for k in registered)
    expected = {'siamrpn_alex': (287, 0, 21, 0.16, 0.40, 0.30),
                'siamrpn_mobilev2': (255, 8, 25, 0.04, 0.4, 0.5),
                'siamrpn_r50': (255, 8, 25, 0.05, 0.42, 0.38)}[arch]
    assert (cfg.instance_size, cfg.base_size, cfg.score_size, cfg.penalty_k,
            cfg.window_influence, cfg.lr) == expected
    assert cfg.ratios == (0.33, 0.5, 1.0, 2.0, 3.0) and cfg.scales == (8.0,)
    assert cfg.stride == 8 and cfg.exemplar_size == 127


def test_siammask_config_is_refused():
    path = need(MODELS / 'pysot-configs-no-weights' / 'siammask_r50_l3' / 'config.yaml')
    with pytest.raises(ValueError, match='MASK'):
        S.load_config(path)


def test_config_errors_name_the_entry():
    with pytest.raises(ValueError, match='BACKBONE.TYPE'):
        S.config_from_mapping({'RPN': {'TYPE': 'DepthwiseRPN'}})
    with pytest.raises(ValueError, match='resnet18'):
        S.config_from_mapping({'BACKBONE': {'TYPE': 'resnet18'}})
    with pytest.raises(ValueError, match='UPChannelRPN'):
        S.config_from_mapping({'BACKBONE': {'TYPE': 'alexnetlegacy'},
                               'RPN': {'TYPE': 'UPChannelRPN'}})


# ------------------------------------------------------------------------------------------
# strict loading

def _pysot_state(net, prefix='', drop_counters=False):
    return {prefix + k: v.clone() for k, v in net.state_dict().items()
            if not (drop_counters and k.endswith('num_batches_tracked'))}


@pytest.mark.parametrize('arch', ARCHS)
def test_pysot_checkpoints_load_strictly(arch, exported, tmp_path):
    _, source = exported[arch]
    variants = {
        'snapshot.pth': {'epoch': 19, 'state_dict': _pysot_state(source, 'module.')},
        'plain.pth': _pysot_state(source, drop_counters=True),
    }
    for name, obj in variants.items():
        path = tmp_path / name
        torch.save(obj, path)
        net = S.SiamRPNpp(source.config)
        report = P.load_pysot_weights(net, path)
        assert report.ok
        assert bool(report.filled) == (name == 'plain.pth')
        for key, value in source.state_dict().items():
            if name == 'plain.pth' and key.endswith('num_batches_tracked'):
                continue  # absent from the file: the counters stay the network's own
            assert torch.equal(net.state_dict()[key], value), (name, key)
        path.unlink()


def test_renamed_or_missing_key_fails_with_a_clear_message(exported, tmp_path):
    _, source = exported['siamrpn_alex']
    state = _pysot_state(source)
    state['rpn_head.cls.head.3.weights'] = state.pop('rpn_head.cls.head.3.weight')
    del state['backbone.features.0.bias']
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(P.CheckpointMismatch) as info:
        P.load_pysot_weights(S.build('siamrpn_alex'), path)
    msg = str(info.value)
    assert '2 missing keys' in msg and 'rpn_head.cls.head.3.weight' in msg
    assert 'backbone.features.0.bias' in msg
    assert '1 unexpected keys' in msg and 'rpn_head.cls.head.3.weights' in msg
    assert 'config.yaml' in msg


def test_checkpoint_of_another_arch_fails_with_shapes_listed(exported, tmp_path):
    _, r50 = exported['siamrpn_r50']
    path = tmp_path / 'r50.pth'
    torch.save(_pysot_state(r50), path)
    mobile = S.build('siamrpn_mobilev2')
    with pytest.raises(P.CheckpointMismatch) as info:
        P.load_pysot_weights(mobile, path)
    msg = str(info.value)
    assert 'shape mismatches' in msg and 'neck.downsample2.downsample.0.weight' in msg
    assert 'missing keys' in msg and 'unexpected keys' in msg


def test_non_checkpoint_files_are_refused(tmp_path):
    path = tmp_path / 'junk.pth'
    torch.save({'epoch': 3, 'lr': 0.1}, path)
    with pytest.raises(ModelError, match='not a checkpoint with a state_dict'):
        read_state_dict(path)
    with pytest.raises(ModelError, match='does not exist'):
        read_state_dict(tmp_path / 'missing.pth')


# ------------------------------------------------------------------------------------------
# the network itself

def test_adjust_layer_crops_template_features_only():
    neck = S.AdjustLayer(8, 4)
    template = torch.randn(1, 8, 15, 15)
    search = torch.randn(1, 8, 31, 31)
    with torch.no_grad():
        full = neck.downsample(template)
        assert torch.equal(neck(template), full[:, :, 4:11, 4:11])  # l = 4, r = l + 7
        assert neck(search).shape[-1] == 31


@pytest.mark.parametrize('arch', ARCHS)
def test_split_halves_equal_pysot_forward(arch, exported):
    _, net = exported[arch]
    gen = torch.Generator().manual_seed(5)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    x = torch.rand(1, 3, net.instance_size, net.instance_size, generator=gen) * 255
    with torch.no_grad():
        ref = net(z, x)  # grouped-conv correlation, as pysot
        kernels = net.template(z)
        got = net.track(kernels, x, xcorr_depthwise_slices)  # the exported form
    k = 4 if arch == 'siamrpn_alex' else 5  # alex: 6x6 -> 4x4; adjusted 7x7 -> 5x5
    assert len(kernels) == 2 * net.levels
    assert all(t.shape == (1, 256, k, k) for t in kernels)
    s = net.score_size
    assert ref[0].shape == (1, 10, s, s) and ref[1].shape == (1, 20, s, s)
    for r, g in zip(ref, got):
        assert float((r - g).abs().max()) <= ATOL + RTOL * float(r.abs().max())


def test_weighted_fusion_is_softmax_of_level_weights(exported):
    _, net = exported['siamrpn_r50']
    gen = torch.Generator().manual_seed(2)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    x = torch.rand(1, 3, net.instance_size, net.instance_size, generator=gen) * 255
    head = net.rpn_head
    with torch.no_grad():
        zf, xf = net._features(z), net._features(x)
        per_level = [getattr(head, f'rpn{i + 2}')(zf[i], xf[i]) for i in range(3)]
        cls, loc = head(zf, xf)
        wc = torch.softmax(head.cls_weight, 0)
        wl = torch.softmax(head.loc_weight, 0)
        assert float(wc.max() - wc.min()) > 0.05  # randomise() made them uneven
        assert torch.allclose(cls, sum(wc[i] * per_level[i][0] for i in range(3)), atol=1e-5)
        assert torch.allclose(loc, sum(wl[i] * per_level[i][1] for i in range(3)), atol=1e-5)


def test_unweighted_fusion_is_the_mean(exported):
    _, net = exported['siamrpn_mobilev2']
    gen = torch.Generator().manual_seed(3)
    z = torch.rand(1, 3, 127, 127, generator=gen) * 255
    x = torch.rand(1, 3, 255, 255, generator=gen) * 255
    head = net.rpn_head
    with torch.no_grad():
        zf, xf = net._features(z), net._features(x)
        per_level = [getattr(head, f'rpn{i + 2}')(zf[i], xf[i]) for i in range(3)]
        cls, _ = head(zf, xf)
        assert torch.allclose(cls, sum(p[0] for p in per_level) / 3, atol=1e-5)


# ------------------------------------------------------------------------------------------
# exported graphs

@pytest.mark.parametrize('arch', ARCHS)
def test_exported_graphs_have_constant_weight_convs_and_static_shapes(arch, exported):
    spec, net = exported[arch]
    for role in ('template', 'search'):
        path = spec.path(role)
        assert runtime_weight_convs(path) == [], role
        model = onnx.load(str(path), load_external_data=False)
        assert [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')] == \
            [P.OPSET]
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField('dim_value') for d in dims), (role, value.name)
    search = onnx.load(str(spec.path('search')), load_external_data=False)
    names = [i.name for i in search.graph.input]
    assert names == ['search'] + [f'zf{i}' for i in range(2 * net.levels)]
    s = net.score_size
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in search.graph.output]
    assert shapes == [[1, 10, s, s], [1, 20, s, s]]


@pytest.mark.parametrize('arch', ARCHS)
def test_exported_graphs_match_pytorch_in_onnxruntime(arch, exported):
    spec, net = exported[arch]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    tsess = ort.InferenceSession(str(spec.path('template')), opts,
                                 providers=['CPUExecutionProvider'])
    ssess = ort.InferenceSession(str(spec.path('search')), opts,
                                 providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(11)
    size = net.instance_size
    inputs = [  # uniform noise, a flat grey crop, and a smooth gradient with noise
        (torch.rand(1, 3, 127, 127, generator=gen) * 255,
         torch.rand(1, 3, size, size, generator=gen) * 255),
        (torch.full((1, 3, 127, 127), 117.0), torch.full((1, 3, size, size), 117.0)),
        (torch.linspace(0, 255, 127).expand(1, 3, 127, 127).contiguous()
         + torch.rand(1, 3, 127, 127, generator=gen) * 20,
         torch.linspace(255, 0, size).expand(1, 3, size, size).transpose(2, 3).contiguous()),
    ]
    for z, x in inputs:
        with torch.no_grad():
            ref_k = net.template(z)
            ref = net(z, x)
        feats = tsess.run(None, {'template': z.numpy()})
        for r, g in zip(ref_k, feats):
            assert np.max(np.abs(r.numpy() - g)) <= ATOL + RTOL * float(r.abs().max())
        feeds = {f'zf{i}': f for i, f in enumerate(feats)}
        feeds['search'] = x.numpy()
        cls, reg = ssess.run(['cls', 'reg'], feeds)
        for r, g in zip(ref, (cls, reg)):
            err = float(np.max(np.abs(r.numpy() - g)))
            assert err <= ATOL + RTOL * float(r.abs().max()), err


def test_verify_export_catches_a_graph_that_does_not_match(exported):
    spec, net = exported['siamrpn_alex']
    assert max(P.verify_export(net, spec.path('template'), spec.path('search')).values()) < 1e-3
    other = S.build('siamrpn_alex')
    P.randomise(other, seed=99)
    with pytest.raises(ModelError, match='differs from PyTorch'):
        P.verify_export(other, spec.path('template'), spec.path('search'), samples=1)


# ------------------------------------------------------------------------------------------
# model directory and tracking

@pytest.mark.parametrize('arch', ARCHS)
def test_model_directory_manifest(arch, exported):
    spec, net = exported[arch]
    again = load_manifest(spec.root)
    cfg = net.config
    assert (again.family, again.decoder, again.layout, again.arch) == \
        ('siamrpn', 'anchor', 'template_search', arch)
    assert again.stride == 8
    assert again.anchors.ratios == (0.33, 0.5, 1.0, 2.0, 3.0) and again.anchors.scales == (8.0,)
    t = again.tracker.step
    assert (t.exemplar_size, t.instance_size, t.penalty_k, t.window_influence, t.lr,
            t.context_amount) == (cfg.exemplar_size, cfg.instance_size, cfg.penalty_k,
                                  cfg.window_influence, cfg.lr, cfg.context_amount)
    # The checkpoint role loads strictly through the registry (what the torch backend does).
    loaded = load_weights(build_net(arch), again.path('checkpoint'), strict=True)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize('arch', ARCHS)
def test_random_weight_tracker_runs_on_real_frames(arch, exported):
    from siam_tracker_ros.io.sequences import load_sequence, read_frame
    from siam_tracker_ros.factory import load_tracker
    spec, _ = exported[arch]
    seq = load_sequence(need(SEQUENCES / 'Crossing'))
    frames = [read_frame(p) for p in seq.frames[:4]]
    tracker = load_tracker(spec.root, backend='onnxruntime')
    tracker.init(frames[0], seq.init_box)
    height, width = frames[0].shape[:2]
    for frame in frames[1:]:
        result = tracker.update(frame)
        assert result.box.is_finite()
        assert 0 < result.box.w <= width and 0 < result.box.h <= height
        assert 0.0 <= result.score <= 1.0


def test_torch_and_onnxruntime_trackers_agree_on_siamrpn(exported):
    from siam_tracker_ros.core.config import preset
    from siam_tracker_ros.io.sequences import load_sequence, read_frame
    from siam_tracker_ros.factory import load_tracker
    spec, _ = exported['siamrpn_alex']
    seq = load_sequence(need(SEQUENCES / 'Crossing'))
    frames = [read_frame(p) for p in seq.frames[:4]]
    boxes = {}
    for backend in ('onnxruntime', 'torch'):
        # 'plain': every frame moves the box by the decoded peak (the long-term logic would
        # hold the first box on a random net's low confidence and compare nothing).
        tracker = load_tracker(spec.root, backend=backend, **preset('plain'))
        tracker.init(frames[0], seq.init_box)
        boxes[backend] = np.array([tracker.update(f).box.as_tuple() for f in frames[1:]])
    assert np.allclose(boxes['onnxruntime'], boxes['torch'], atol=1e-2)
    start = np.array(seq.init_box.as_tuple())
    assert np.abs(boxes['onnxruntime'] - start).max(axis=1).min() > 0.5, 'the boxes moved'
    assert np.abs(np.diff(boxes['onnxruntime'], axis=0)).max() > 0.5


def test_siam_eval_runs_the_random_siamrpn_model_end_to_end(exported, tmp_path):
    """siam-eval with a random-weight SiamRPN++ model (no accuracy claim: it reports the run)."""
    import json

    from siam_tracker_ros.cli import siam_eval
    from siam_tracker_ros.eval.metrics import evaluate_sequence
    from siam_tracker_ros.eval.runner import run_tracker
    from siam_tracker_ros.eval.synthetic import write_clip
    from siam_tracker_ros.factory import load_tracker
    from siam_tracker_ros.io.sequences import load_frames, load_sequence
    write_clip(tmp_path / 'seqs' / 'Moving', frames=8, seed=3)
    spec, _ = exported['siamrpn_alex']
    out = tmp_path / 'eval.json'
    rc = siam_eval.main(['--model', str(spec.root), '--sequences', str(tmp_path / 'seqs'),
                         '--backend', 'onnxruntime', '--json', str(out), '--save-boxes',
                         '--quiet'])
    assert rc == 0
    block = json.loads(out.read_text())['trackers']['ours']
    mean, rec = block['mean'], block['sequences']['Moving']
    assert mean['sequences'] == 1 and rec['frames'] == 8
    # What siam-eval reports is what the tracker does: the same run made here directly gives
    # the same boxes, and the AUC of those boxes.
    seq = load_sequence(tmp_path / 'seqs' / 'Moving')
    run = run_tracker(load_tracker(spec.root, backend='onnxruntime'), load_frames(seq), seq)
    assert np.array_equal(np.array(rec['boxes'], dtype=float), run.boxes)
    assert rec['found'] == run.found.tolist()
    auc = evaluate_sequence(run.boxes, seq.gt).auc
    assert rec['auc'] == pytest.approx(auc, abs=1e-12)
    assert mean['auc'] == pytest.approx(auc, abs=1e-12)
