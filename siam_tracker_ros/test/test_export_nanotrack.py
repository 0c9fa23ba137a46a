"""
ONNX export of NanoTrack, the runtime-weight Conv inspector, export_nanotrack's model dir.

NanoTrack is exported as template/search graphs; export_nanotrack writes the product model
directory.

Needs ../shared/reference-models (override with SIAM_SHARED) for the NanoTrack parts; skipped
with the reason if absent. The three versions are exported once per module into tmp dirs.
Tolerance against the upstream ONNX pair (both run in ONNX Runtime, CPU), relative to the
largest reference value: template features 2e-4 (measured about 1e-6 on real crops, <= 5e-5 on
random pixels), cls/reg end to end 1e-3 (measured <= 2e-4; reg passes through exp()).
"""

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import bag_crops, MODELS
from siam_tracker_ros.core.manifest import load_manifest
from siam_tracker_ros.nets.export import (export_nanotrack, export_split, ExportError,
                                          fold_constants, NANOTRACK_HPARAMS,
                                          runtime_weight_convs, write_model_dir)
from siam_tracker_ros.nets.nanotrack_import import make_backbone_dynamic
import torch
import torch.nn as nn
from torch.nn.functional import conv2d

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

REFS = MODELS
FEATURE_TOL = 2e-4
OUTPUT_TOL = 1e-3
VERSIONS = (1, 2, 3)


def _session(path) -> 'ort.InferenceSession':
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=['CPUExecutionProvider'])


def _close(got, ref, what, tol):
    assert got.shape == ref.shape, f'{what}: shape {got.shape} != {ref.shape}'
    err, peak = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    assert peak > 0
    assert err <= tol * peak, f'{what}: max error {err:.3g} > {tol} * peak {peak:.3g}'


def _dims(value):
    return [d.dim_value if d.HasField('dim_value') else d.dim_param
            for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Map version -> ModelSpec of a model directory made by export_nanotrack (v1, v2, v3)."""
    out = {}
    for v in VERSIONS:
        ckpt = REFS / f'nanotrack-v{v}' / f'nanotrackv{v}.pth'
        if ckpt.is_file():
            out[v] = export_nanotrack(v, ckpt, tmp_path_factory.mktemp(f'nanotrack_v{v}'))
    return out


def _spec(exported, version):
    if version not in exported:
        pytest.skip(f'{REFS}/nanotrack-v{version}/nanotrackv{version}.pth is absent '
                    '(needs ../shared)')
    return exported[version]


@pytest.fixture(scope='module')
def upstream(tmp_path_factory):
    """Map version -> (backbone session with free H/W, head session) of the upstream ONNX pair."""
    tmp = tmp_path_factory.mktemp('upstream')
    cache = {}

    def get(version):
        if version in cache:
            return cache[version]
        folder = REFS / f'nanotrack-v{version}'
        backbones = sorted(folder.glob('nanotrack_backbone*.onnx'))
        heads = sorted(folder.glob('nanotrack_head*.onnx'))
        if not backbones or not heads:
            pytest.skip(f'upstream ONNX files absent in {folder} (needs ../shared)')
        dst = tmp / f'backbone_v{version}.onnx'
        make_backbone_dynamic(backbones[0], dst)
        cache[version] = (_session(dst), _session(heads[0]))
        return cache[version]
    return get


@pytest.fixture(scope='module')
def crops():
    rng = np.random.default_rng(11)
    return {
        'bag': bag_crops(),
        'random': (rng.uniform(0, 255, (1, 3, 127, 127)).astype(np.float32),
                   rng.uniform(0, 255, (1, 3, 255, 255)).astype(np.float32)),
    }


# ------------------------------------------------------------------ the model directory

@pytest.mark.parametrize('version', VERSIONS)
def test_model_directory_manifest(version, exported):
    spec = _spec(exported, version)
    again = load_manifest(spec.root)  # verifies every sha256
    assert again == spec
    assert spec.layout == 'template_search' and spec.graph_roles == ('template', 'search')
    assert spec.family == 'nanotrack' and spec.arch == f'nanotrack_v{version}'
    assert spec.decoder == 'anchor_free' and spec.stride == 16
    assert set(spec.files) == {'template', 'search', 'checkpoint'}
    assert spec.input_mean == (0.0, 0.0, 0.0) and spec.input_std == (1.0, 1.0, 1.0)
    t = spec.tracker.step
    assert (t.exemplar_size, t.instance_size, t.context_amount) == (127, 255, 0.5)
    want = {1: (0.148, 0.462, 0.390), 2: (0.150, 0.490, 0.385), 3: (0.138, 0.455, 0.348)}
    assert (t.penalty_k, t.window_influence, t.lr) == pytest.approx(want[version])
    assert NANOTRACK_HPARAMS[version]['penalty_k'] == pytest.approx(want[version][0])
    # The saved checkpoint is the state dict alone (no optimizer state), loadable safely.
    saved = torch.load(spec.path('checkpoint'), map_location='cpu', weights_only=True)
    assert saved['arch'] == spec.arch and 'optimizer' not in saved


@pytest.mark.parametrize('version', VERSIONS)
def test_graph_interfaces_are_static(version, exported):
    spec = _spec(exported, version)
    channels = 96 if version == 3 else 48
    size = 15 if version == 3 else 16
    template = onnx.load(str(spec.path('template')))
    search = onnx.load(str(spec.path('search')))
    for model in (template, search):
        assert {o.domain: o.version for o in model.opset_import}[''] == 17
        onnx.checker.check_model(model)
    assert [(i.name, _dims(i)) for i in template.graph.input] == [
        ('template', [1, 3, 127, 127])]
    assert [(o.name, _dims(o)) for o in template.graph.output] == [
        ('zf', [1, channels, 8, 8])]
    assert [(i.name, _dims(i)) for i in search.graph.input] == [
        ('search', [1, 3, 255, 255]), ('zf', [1, channels, 8, 8])]
    assert [(o.name, _dims(o)) for o in search.graph.output] == [
        ('cls', [1, 2, size, size]), ('reg', [1, 4, size, size])]
    # Nothing computable from constants alone is left (e.g. a Pad's pads chain).
    assert fold_constants(search) == 0 and fold_constants(template) == 0


@pytest.mark.parametrize('version', VERSIONS)
def test_exported_graphs_have_constant_conv_weights(version, exported):
    spec = _spec(exported, version)
    assert runtime_weight_convs(spec.path('template')) == []
    assert runtime_weight_convs(spec.path('search')) == []
    convs = [n for n in onnx.load(str(spec.path('search'))).graph.node if n.op_type == 'Conv']
    assert len(convs) > 20  # the check looked at a real head, not an empty graph


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('kind', ['bag', 'random'])
def test_exported_graphs_match_upstream(version, kind, exported, upstream, crops):
    spec = _spec(exported, version)
    backbone, head = upstream(version)
    z, x = crops[kind]
    zf_ref = backbone.run(None, {'input': z})[0]
    xf_ref = backbone.run(None, {'input': x})[0]
    cls_ref, reg_ref = head.run(['output1', 'output2'], {'input1': zf_ref, 'input2': xf_ref})

    zf = _session(spec.path('template')).run(['zf'], {'template': z})[0]
    _close(zf, zf_ref, f'v{version} zf', FEATURE_TOL)
    cls, reg = _session(spec.path('search')).run(['cls', 'reg'], {'search': x, 'zf': zf})
    _close(cls, cls_ref, f'v{version} cls', OUTPUT_TOL)
    _close(reg, reg_ref, f'v{version} reg', OUTPUT_TOL)
    if kind == 'bag':
        e = np.exp(cls - cls.max(1, keepdims=True))
        assert (e[0, 1] / e[0].sum(0)).max() > 0.9  # a real target gives a clear peak


# -------------------------------------------------------------- the inspector, negatives

def test_upstream_v3_head_has_runtime_weight_convs():
    """Upstream v3 computes its depthwise xcorr with F.conv2d: exactly what TensorRT rejects."""
    head = REFS / 'nanotrack-v3' / 'nanotrack_head.onnx'
    if not head.is_file():
        pytest.skip(f'{head} is absent (needs ../shared)')
    assert len(runtime_weight_convs(head)) == 2  # the reg and cls depthwise correlations


class _RuntimeKernelNet(nn.Module):
    """Conv with constant weights, then a correlation that takes its kernel from the input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, k):
        return conv2d(self.conv(x), k, groups=4)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_inspector_flags_conv_with_runtime_weights(tmp_path):
    path = tmp_path / 'runtime_kernel.onnx'
    net = _RuntimeKernelNet().eval()
    torch.onnx.export(net, (torch.rand(1, 3, 12, 12), torch.rand(4, 1, 3, 3)), str(path),
                      input_names=['x', 'k'], opset_version=17, dynamo=False)
    bad = runtime_weight_convs(path)
    assert len(bad) == 1
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == 'Conv']
    flagged = [n for n in convs if n.name in bad]
    assert len(convs) == 2 and len(flagged) == 1 and flagged[0].input[1] == 'k'


def test_inspector_traces_identity_and_constant(tmp_path):
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), 'w')
    nodes = [
        helper.make_node('Constant', [], ['wc'], value=numpy_helper.from_array(
            np.ones((1, 1, 1, 1), np.float32), 'wc_value')),
        helper.make_node('Identity', ['wc'], ['wi']),
        helper.make_node('Identity', ['w'], ['wj']),
        helper.make_node('Conv', ['x', 'wi'], ['a'], name='const_via_identity'),
        helper.make_node('Conv', ['a', 'wj'], ['b'], name='init_via_identity'),
        helper.make_node('Conv', ['b', 'w'], ['c'], name='init'),
        helper.make_node('Identity', ['k'], ['ki']),
        helper.make_node('Conv', ['c', 'ki'], ['d'], name='input_via_identity'),
        helper.make_node('Relu', ['k'], ['kr']),
        helper.make_node('ConvTranspose', ['d', 'kr'], ['y']),   # unnamed: reported by index
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('x', f, [1, 1, 4, 4]),
                     helper.make_tensor_value_info('k', f, [1, 1, 1, 1])],
        [helper.make_tensor_value_info('y', f, None)], initializer=[w])
    path = tmp_path / 'hand.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    assert runtime_weight_convs(path) == ['input_via_identity', 'ConvTranspose_9']


# ------------------------------------------------------------ export_split on toy nets

class _Toy(nn.Module):
    """A two-level toy Siamese net using nets.ops, or a runtime-weight F.conv2d when bad."""

    def __init__(self, bad: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2)
        self.deep = nn.Conv2d(4, 4, 3, stride=2)
        self.head = nn.Conv2d(4, 2, 1)
        self.bad = bad

    def split(self):
        toy = self

        class Template(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = toy

            def forward(self, z):
                a = self.net.stem(z)
                return a, self.net.deep(a)

        class Search(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = toy

            def forward(self, x, z0, z1):
                from siam_tracker_ros.nets.ops import xcorr_depthwise
                a = self.net.stem(x)
                b = self.net.deep(a)
                if self.net.bad:
                    c = conv2d(b, z1.reshape(4, 1, *z1.shape[2:]), groups=4)
                else:
                    c = xcorr_depthwise(b, z1)
                cls = self.net.head(c) + z0.mean()
                return cls, torch.exp(c)
        return Template(), Search()


def test_export_split_multi_level_names(tmp_path):
    tpath, spath = export_split(_Toy().eval(), tmp_path, 15, 31)
    t, s = onnx.load(str(tpath)), onnx.load(str(spath))
    assert [o.name for o in t.graph.output] == ['zf0', 'zf1']
    assert [i.name for i in s.graph.input] == ['search', 'zf0', 'zf1']
    assert [o.name for o in s.graph.output] == ['cls', 'reg']
    z0, z1 = _session(tpath).run(None, {'template': np.ones((1, 3, 15, 15), np.float32)})
    cls, reg = _session(spath).run(None, {'search': np.ones((1, 3, 31, 31), np.float32),
                                          'zf0': z0, 'zf1': z1})
    assert cls.shape == (1, 2, 5, 5) and reg.shape == (1, 4, 5, 5)


def test_export_split_refuses_runtime_weight_convs(tmp_path):
    with pytest.raises(ExportError, match='run-time weights'):
        export_split(_Toy(bad=True).eval(), tmp_path, 15, 31)


def test_write_model_dir_needs_its_files(tmp_path, exported):
    spec = _spec(exported, 2)
    with pytest.raises(FileNotFoundError, match='search file'):
        write_model_dir(tmp_path / 'm', name='x', family='nanotrack', arch='nanotrack_v2',
                        decoder='anchor_free', stride=16, tracker=spec.tracker,
                        template_onnx=spec.path('template'),
                        search_onnx=tmp_path / 'nope.onnx')
    # Files from elsewhere are copied in and hashed.
    copy = write_model_dir(tmp_path / 'm', name='copy', family='nanotrack',
                           arch='nanotrack_v2', decoder='anchor_free', stride=16,
                           tracker=spec.tracker, template_onnx=spec.path('template'),
                           search_onnx=spec.path('search'))
    assert copy.files == {'template': 'template.onnx', 'search': 'search.onnx'}
    assert copy.sha256['search'] == spec.sha256['search']
