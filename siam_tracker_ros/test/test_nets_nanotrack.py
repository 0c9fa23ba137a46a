"""
NanoTrack v1/v2/v3 PyTorch definitions against the upstream checkpoints and ONNX graphs.

Needs ../shared/reference-models (override with SIAM_SHARED); skipped with the reason if absent.
Tolerances, relative to the largest reference value: |torch - onnx| <= TOL * max|onnx|.
MODULE_TOL (backbone alone, head alone on identical features) = 2e-4; measured <= 5e-5 (about
1e-6 on real crops). PIPELINE_TOL (template encoder + search head end to end, where feature
differences pass through exp() of the reg branch) = 1e-3; measured <= 1.8e-4.
"""
from pathlib import Path

import cv2
import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import MODELS, SHARED
from siam_tracker_ros.core.crop import context_size, crop_window, to_blob
from siam_tracker_ros.core.manifest import ModelError
from siam_tracker_ros.nets.nanotrack import NanoTrack
from siam_tracker_ros.nets.nanotrack_import import make_backbone_dynamic
from siam_tracker_ros.nets.ops import (xcorr_depthwise, xcorr_depthwise_conv,
                                       xcorr_depthwise_slices, xcorr_pixelwise)
from siam_tracker_ros.nets.registry import build_net, load_weights, NETS
import torch
from torch.nn.functional import conv2d

ort = pytest.importorskip('onnxruntime')

REFS = MODELS
MODULE_TOL = 2e-4
PIPELINE_TOL = 1e-3
VERSIONS = (1, 2, 3)


def _ref_dir(version: int) -> Path:
    folder = REFS / f'nanotrack-v{version}'
    if not (folder / f'nanotrackv{version}.pth').is_file():
        pytest.skip(f'{folder} with nanotrackv{version}.pth is absent (needs ../shared)')
    return folder


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        pytest.skip(f'no {pattern} in {folder}')
    return found[0]


def _session(path) -> 'ort.InferenceSession':
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=['CPUExecutionProvider'])


def _dynamic_backbone(src: Path, dst: Path) -> Path:
    """Return the upstream backbone with free H/W, so it also runs on 127x127 template crops."""
    make_backbone_dynamic(src, dst)
    return dst


class Upstream:
    """The upstream ONNX pair of one version, run in ONNX Runtime (CPU)."""

    def __init__(self, version: int, tmp: Path):
        folder = _ref_dir(version)
        backbone = _one(folder, 'nanotrack_backbone*.onnx')
        self.backbone_255 = _session(backbone)
        dy = REFS / 'nanotrack-v2-dynamic-backbone' / 'nanotrack_backbone_dy_sim.onnx'
        if version == 2 and dy.is_file():
            self.backbone_any = _session(dy)
        else:
            self.backbone_any = _session(_dynamic_backbone(backbone, tmp / f'bb{version}.onnx'))
        self.head = _session(_one(folder, 'nanotrack_head*.onnx'))

    def features(self, crop: np.ndarray, fixed: bool = False) -> np.ndarray:
        sess = self.backbone_255 if fixed else self.backbone_any
        return sess.run(None, {'input': crop})[0]

    def run_head(self, zf: np.ndarray, xf: np.ndarray):
        cls, reg = self.head.run(['output1', 'output2'], {'input1': zf, 'input2': xf})
        return cls, reg


@pytest.fixture(scope='module')
def crops():
    """(template, search) pairs: the first frame of 'bag' around its box, plus random pixels."""
    seq = SHARED / 'sequences' / 'bag'
    frames = sorted((seq / 'img').glob('*.jpg'))
    if not frames:
        pytest.skip(f'{seq} is absent (needs ../shared)')
    image = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    x, y, w, h = (float(v) for v in
                  (seq / 'groundtruth.txt').read_text().splitlines()[0].split(','))
    center = (x + w / 2 - 0.5, y + h / 2 - 0.5)
    s_z = context_size(w, h, 0.5)
    s_x = s_z * 255 / 127
    mean = image.reshape(-1, 3).mean(0)
    real = (to_blob(crop_window(image, center, round(s_z), 127, mean)),
            to_blob(crop_window(image, center, round(s_x), 255, mean)))
    # The search crop shifted so the target is off-centre, as while tracking.
    shifted = (real[0], to_blob(crop_window(image, (center[0] + 0.2 * s_x, center[1]),
                                            round(s_x), 255, mean)))
    rng = np.random.default_rng(7)
    noise = (rng.uniform(0, 255, (1, 3, 127, 127)).astype(np.float32),
             rng.uniform(0, 255, (1, 3, 255, 255)).astype(np.float32))
    return {'bag': real, 'bag_shifted': shifted, 'random': noise}


@pytest.fixture(scope='module')
def nets():
    out = {}
    for v in VERSIONS:
        folder = REFS / f'nanotrack-v{v}'
        if (folder / f'nanotrackv{v}.pth').is_file():
            out[v] = load_weights(build_net(f'nanotrack_v{v}'), folder / f'nanotrackv{v}.pth')
    return out


@pytest.fixture(scope='module')
def upstream(tmp_path_factory):
    cache = {}
    tmp = tmp_path_factory.mktemp('upstream')

    def get(version):
        if version not in cache:
            cache[version] = Upstream(version, tmp)
        return cache[version]
    return get


def _close(got: np.ndarray, ref: np.ndarray, what: str, tol: float = MODULE_TOL) -> None:
    assert got.shape == ref.shape, f'{what}: shape {got.shape} != {ref.shape}'
    err = float(np.abs(got - ref).max())
    peak = float(np.abs(ref).max())
    assert peak > 0, f'{what}: reference is all zeros'
    assert err <= tol * peak, f'{what}: max error {err:.3g} > {tol} * peak {peak:.3g}'


def _torch(module, *arrays):
    with torch.inference_mode():
        out = module(*(torch.from_numpy(a) for a in arrays))
    if isinstance(out, tuple):
        return tuple(o.numpy() for o in out)
    return out.numpy()


# ------------------------------------------------------------------------- correlation ops

@pytest.mark.parametrize('shape_x,shape_z,padding', [
    ((1, 96, 16, 16), (1, 96, 4, 4), 1),     # NanoTrack v3
    ((2, 8, 13, 11), (2, 8, 5, 3), 0),       # batch > 1, non-square
    ((1, 16, 25, 25), (1, 16, 7, 7), 0),     # SiamRPN++ r50 sized
    ((1, 4, 6, 6), (1, 4, 6, 6), 2),         # kernel as large as the input
])
@pytest.mark.parametrize('impl', [xcorr_depthwise, xcorr_depthwise_slices,
                                  xcorr_depthwise_conv])
def test_xcorr_depthwise_equals_grouped_conv(shape_x, shape_z, padding, impl):
    """Both forms (slices, exported; grouped conv, eager) equal pysot's grouped conv."""
    gen = torch.Generator().manual_seed(sum(shape_x) + padding)
    x = torch.randn(shape_x, generator=gen)
    z = torch.randn(shape_z, generator=gen)
    b, c = shape_x[:2]
    ref = conv2d(x.reshape(1, b * c, *shape_x[2:]), z.reshape(b * c, 1, *shape_z[2:]),
                 padding=padding, groups=b * c)
    ref = ref.reshape(b, c, ref.shape[2], ref.shape[3])
    got = impl(x, z, padding=padding)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-5


def test_xcorr_depthwise_rejects_bad_shapes():
    with pytest.raises(ValueError, match='batch/channels'):
        xcorr_depthwise(torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match='larger'):
        xcorr_depthwise(torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 5, 5))


def test_xcorr_pixelwise_matches_definition():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 7, generator=gen)
    z = torch.randn(2, 6, 3, 2, generator=gen)
    ref = torch.einsum('bcuv,bcij->buvij', z, x).reshape(2, 6, 5, 7)
    got = xcorr_pixelwise(x, z)
    assert got.shape == (2, 6, 5, 7)
    assert float((got - ref).abs().max()) <= 1e-5


# ------------------------------------------------------------------------ checkpoint load

@pytest.mark.parametrize('version', VERSIONS)
def test_checkpoint_loads_strictly(version):
    folder = _ref_dir(version)
    ckpt = torch.load(folder / f'nanotrackv{version}.pth', map_location='cpu',
                      weights_only=False)['state_dict']
    net = load_weights(build_net(f'nanotrack_v{version}'), folder / f'nanotrackv{version}.pth',
                       strict=True)
    state = net.state_dict()
    assert set(state) == set(ckpt)
    assert any(k.startswith('neck.downsample.') for k in state)
    for key, value in ckpt.items():
        assert torch.equal(state[key], value), key
    assert not net.training


def test_strict_load_reports_missing_and_unexpected_keys(tmp_path):
    folder = _ref_dir(2)
    state = torch.load(folder / 'nanotrackv2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    state = dict(state)
    state.pop('ban_head.cls_pred.0.bias')
    state['ban_head.extra.weight'] = torch.zeros(1)
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, bad)
    with pytest.raises(ModelError, match=r'1 missing keys \[ban_head.cls_pred.0.bias\]'):
        load_weights(build_net('nanotrack_v2'), bad)
    # v1 weights do not fit v3: the error says so instead of a bare RuntimeError.
    with pytest.raises(ModelError):
        load_weights(build_net('nanotrack_v3'), _ref_dir(1) / 'nanotrackv1.pth')
    with pytest.raises(ModelError, match='does not exist'):
        load_weights(build_net('nanotrack_v2'), tmp_path / 'missing.pth')


def test_registry_names_and_errors():
    assert {'nanotrack_v1', 'nanotrack_v2', 'nanotrack_v3'} <= set(NETS)
    net = build_net('nanotrack_v3')
    assert isinstance(net, NanoTrack) and net.version == 3 and net.arch == 'nanotrack_v3'
    with pytest.raises(ModelError, match='unknown network architecture'):
        build_net('nanotrack_v9')
    with pytest.raises(ValueError):
        NanoTrack(4)


def test_split_shares_parameters():
    net = build_net('nanotrack_v2')
    template, search = net.split()
    assert template.backbone is net.backbone and search.backbone is net.backbone
    assert search.ban_head is net.ban_head
    # The wrappers are not registered in the net: its state_dict stays checkpoint-shaped.
    assert not any(k.startswith(('template', 'search')) for k in net.state_dict())


# --------------------------------------------------------------- parity with upstream ONNX

@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('kind', ['bag', 'random'])
def test_backbone_matches_upstream(version, kind, crops, nets, upstream):
    ref = upstream(version)
    net = nets[version]
    z, x = crops[kind]
    _close(_torch(net.backbone, x), ref.features(x, fixed=True), f'v{version} backbone 255')
    zf = _torch(net.backbone, z)
    assert zf.shape[2:] == (8, 8)
    _close(zf, ref.features(z), f'v{version} backbone 127')


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('kind', ['bag', 'bag_shifted', 'random'])
def test_head_matches_upstream(version, kind, crops, nets, upstream):
    """Same features into both heads; then the whole split pipeline against upstream's."""
    ref = upstream(version)
    net = nets[version]
    z, x = crops[kind]
    zf_ref, xf_ref = ref.features(z), ref.features(x, fixed=True)
    cls_ref, reg_ref = ref.run_head(zf_ref, xf_ref)
    size = 15 if version == 3 else 16
    assert cls_ref.shape == (1, 2, size, size) and reg_ref.shape == (1, 4, size, size)
    cls, reg = _torch(net.ban_head, zf_ref, xf_ref)
    _close(cls, cls_ref, f'v{version} head cls')
    _close(reg, reg_ref, f'v{version} head reg')

    template, search = net.split()
    zf = _torch(template, z)
    cls2, reg2 = _torch(search, x, zf)
    _close(cls2, cls_ref, f'v{version} split cls', PIPELINE_TOL)
    _close(reg2, reg_ref, f'v{version} split reg', PIPELINE_TOL)
    if kind.startswith('bag'):
        # A real target: the score map has a clear peak, so the comparison means something.
        score = torch.softmax(torch.from_numpy(cls2), 1)[0, 1].numpy()
        assert score.max() > 0.9
