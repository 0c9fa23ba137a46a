"""
siam-train on SiamRPN++: pysot's anchor labels and losses, a fit from a pysot checkpoint, export.

No pysot weights exist here: the checkpoint is a seeded random siamrpn_alex
(``pysot_import.randomise``) saved as a pysot training snapshot ('module.' prefix, no
BatchNorm counters). The fit test trains on two short sequences of ../shared/sequences
(skipped with the reason where that folder is absent) and hands the saved model.pth to
``siam-model import pysot`` with pysot's published alex config.
"""
from dataclasses import replace

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import MODELS, need, SEQUENCES
from siam_tracker_ros.cli import siam_model
from siam_tracker_ros.core.decode import anchor_boxes, AnchorDecoder
from siam_tracker_ros.core.manifest import AnchorSpec, load_manifest
from siam_tracker_ros.nets import pysot_import as P
from siam_tracker_ros.nets.registry import build_net, load_weights, read_state_dict
from siam_tracker_ros.train.config import ConfigError, load_config, LossConfig, SamplerConfig
from siam_tracker_ros.train.losses import anchor_losses
from siam_tracker_ros.train.pairs import anchor_labels, Geometry
from siam_tracker_ros.train.trainer import resolve_base, train
import torch

ANCHORS = AnchorSpec()                 # pysot: ratios 0.33, 0.5, 1, 2, 3; scale 8
# (w, h) of each ratio's anchor at stride 8: int(sqrt(64 / r)) and int(that * r), times 8.
SIZES = [(104, 32), (88, 40), (64, 64), (40, 80), (32, 96)]
TINY = Geometry(exemplar_size=127, instance_size=159, score_size=7, stride=8,
                context_amount=0.5, anchors=ANCHORS)
KEEP_ALL = SamplerConfig(pos_num=0, neg_num=0)
ALEX_CONFIG = MODELS / 'pysot-configs-no-weights' / 'siamrpn_alex_dwxcorr' / 'config.yaml'


def _cell(row, col, size=7, stride=8):
    """(cx, cy) offsets from the crop centre of score-map cell (row, col)."""
    return ((col - size // 2) * stride, (row - size // 2) * stride)


def test_anchor_sizes_are_core_decode_anchors():
    anchors = anchor_boxes(7, 8, ANCHORS.ratios, ANCHORS.scales).reshape(4, 5, 7, 7)
    assert [(anchors[2, k, 0, 0], anchors[3, k, 0, 0]) for k in range(5)] == SIZES
    assert (anchors[0, 0, 2, 5], anchors[1, 0, 2, 5]) == _cell(2, 5)


def test_target_on_an_anchor_labels_by_hand():
    k, row, col = 3, 2, 4                                  # the 40 x 80 anchor (ratio 2)
    cx, cy = _cell(row, col)
    box = np.array([cx, cy, 40.0, 80.0])
    cls, reg, weight = anchor_labels(box, TINY, KEEP_ALL, np.random.default_rng(0))
    assert cls.shape == (5, 7, 7) and reg.shape == (4, 5, 7, 7) and weight.shape == (5, 7, 7)
    assert cls[k, row, col] == 1 and np.all(reg[:, k, row, col] == 0)
    # Same anchor shape one cell off: IoU 32*80 / (2*3200 - 2560) = 0.667 in x,
    # 40*72 / (6400 - 2880) = 0.818 in y: positive. Two cells off in x: 1920 / 4480 = 0.43,
    # ignored; three: 1280 / 5120 = 0.25, negative.
    assert cls[k, row, col + 1] == 1 and cls[k, row + 1, col] == 1
    assert cls[k, row, col - 2] == -1 and cls[k, row, col + 2] == -1
    assert cls[k, row, col - 3] == 0 and cls[k, 6, 0] == 0
    # The other shapes on the same cell: 32x96 IoU 2560 / 3712 = 0.69 (positive), 64x64
    # 2560 / 4736 = 0.54 and 88x40 1600 / 5120 = 0.3125 (ignored), 104x32 1280 / 5248 = 0.24.
    assert [cls[i, row, col] for i in range(5)] == [0, -1, -1, 1, 1]
    np.testing.assert_allclose(reg[:, k, row, col + 1], [-8 / 40, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(reg[:, 4, row, col],
                               [0, 0, np.log(40 / 32), np.log(80 / 96)], atol=1e-6)
    positives = int((cls == 1).sum())
    np.testing.assert_allclose(weight, (cls == 1) / positives)


def test_deltas_decode_back_to_the_box():
    box = np.array([5.3, -9.1, 50.0, 70.0])
    cls, reg, weight = anchor_labels(box, TINY, KEEP_ALL, np.random.default_rng(0))
    pos = cls == 1
    assert pos.sum() >= 2
    logits = np.stack([np.where(pos, 0.0, 5.0), np.where(pos, 5.0, 0.0)]).reshape(1, 10, 7, 7)
    decoded = AnchorDecoder(8, ANCHORS).decode(logits.astype(np.float32),
                                               reg.reshape(1, 20, 7, 7))
    flat = pos.ravel()
    assert np.all(decoded.scores[flat] > 0.99) and np.all(decoded.scores[~flat] < 0.01)
    np.testing.assert_allclose(decoded.boxes[:, flat], np.repeat(box[:, None], flat.sum(), 1),
                               rtol=1e-5, atol=1e-4)


def test_caps_and_negative_pairs():
    big = np.array([0.0, 0.0, 60.0, 60.0])
    capped = SamplerConfig()                               # 16 positives, 48 negatives
    cls, _, weight = anchor_labels(big, TINY, replace(capped, pos_num=2),
                                   np.random.default_rng(1))
    assert (cls == 1).sum() == 2 and (cls == 0).sum() == 48
    np.testing.assert_allclose(weight.sum(), 1.0)
    cls, reg, weight = anchor_labels(None, TINY, capped, np.random.default_rng(1))
    assert (cls == 0).sum() == 48 and (cls == -1).sum() == 5 * 49 - 48
    assert not reg.any() and not weight.any()


def test_anchor_losses_are_pysots():
    rng = np.random.default_rng(3)
    box = np.array([4.0, 2.0, 50.0, 60.0])
    items = [anchor_labels(box, TINY, SamplerConfig(), rng),
             anchor_labels(None, TINY, SamplerConfig(), rng)]
    batch = {name: torch.from_numpy(np.stack([it[i] for it in items]))
             for i, name in enumerate(('cls_label', 'reg_target', 'reg_weight'))}
    gen = torch.Generator().manual_seed(0)
    out = {'cls': torch.randn(2, 10, 7, 7, generator=gen),
           'reg': torch.randn(2, 20, 7, 7, generator=gen)}
    terms = anchor_losses(out, batch, LossConfig(cls_weight=1.0, loc_weight=1.2))
    # pysot: log_softmax over [2, K] channels, NLL averaged over positives and negatives.
    logp = torch.log_softmax(out['cls'].view(2, 2, 5, 7, 7), dim=1)
    label = batch['cls_label']
    cls = -0.5 * logp[:, 1][label == 1].mean() - 0.5 * logp[:, 0][label == 0].mean()
    diff = (out['reg'].view(2, 4, 5, 7, 7) - batch['reg_target']).abs().sum(1)
    loc = (diff * batch['reg_weight']).sum() / 2
    assert torch.allclose(terms['cls'], cls) and torch.allclose(terms['reg'], 1.2 * loc)


# ------------------------------------------------------------------------------------------
# training

def _pysot_snapshot(tmp_path, arch='siamrpn_alex', seed=3):
    """Save a seeded random net as pysot saves snapshots; return (path, net)."""
    net = P.randomise(build_net(arch), seed)
    state = {'module.' + k: v.clone() for k, v in net.state_dict().items()
             if not k.endswith('num_batches_tracked')}
    path = tmp_path / f'{arch}.pth'
    torch.save({'epoch': 20, 'state_dict': state}, path)
    return path, net


def _small(model, arch, extra=()):
    need(SEQUENCES / 'bag')
    return [f'model={model}', *([f'arch={arch}'] if arch else []),
            f'data.sources=[{{root: {SEQUENCES}, names: [bag, Crossing], max_frames: 12}}]',
            'data.num_workers=0', 'batch_size=4', 'val.sequences=[]', 'tensorboard=false',
            'checkpoint_every=0', 'threads=1', *extra]


def test_fits_from_a_pysot_checkpoint_and_imports(tmp_path):
    """Fit 4 fixed pairs (loss falls >= 50 %), validate, import the model.pth, track."""
    from siam_tracker_ros.factory import load_tracker
    from siam_tracker_ros.io.sequences import load_sequence, read_frame
    config = need(ALEX_CONFIG)
    checkpoint, start = _pysot_snapshot(tmp_path)
    cfg = load_config(None, _small(checkpoint, 'siamrpn_alex', [
        'data.unique_pairs=4', 'steps=40', 'optim.optimizer=adamw', 'optim.lr=0.001',
        'optim.schedule=constant', 'optim.warmup_steps=0', f'val.sequences=[{SEQUENCES}/David]',
        'val.max_frames=4', 'val.at_start=false']))
    result = train(cfg, tmp_path / 'run', progress=False)
    first = result.losses[0]['loss']
    last = float(np.mean([r['loss'] for r in result.losses[-5:]]))
    print(f'siamrpn_alex fit: loss {first:.4f} -> {last:.4f}, '
          f'{result.seconds_per_step:.2f} s/step')
    assert last <= 0.5 * first, f'loss fell only from {first:.4f} to {last:.4f}'
    assert list(result.losses[0]) == ['step', 'lr', 'loss', 'cls', 'reg', 'seconds']
    assert [r['step'] for r in result.val] == [40] and 0.0 <= result.val[0]['auc'] <= 1.0

    # model.pth: pysot's names, strict into the product net; the backbone stayed frozen.
    trained = load_weights(build_net('siamrpn_alex'), result.weights, strict=True)
    state, begin = trained.state_dict(), start.state_dict()
    assert set(state) == set(begin)
    for key, value in state.items():         # (the snapshot had no BatchNorm counters)
        if key.startswith('backbone.') and not key.endswith('num_batches_tracked'):
            assert torch.equal(value, begin[key]), f'{key} changed but is frozen'
    assert not torch.equal(state['rpn_head.cls.head.3.weight'],
                           begin['rpn_head.cls.head.3.weight'])
    assert torch.load(result.modules, weights_only=True)['state_dict'] == {}

    out = tmp_path / 'model'
    assert siam_model.main(['import', 'pysot', '--config', str(config), '--checkpoint',
                            str(result.weights), '--out', str(out)]) == 0
    spec = load_manifest(out)
    assert (spec.arch, spec.decoder, spec.anchors) == ('siamrpn_alex', 'anchor', ANCHORS)
    imported = read_state_dict(spec.path('checkpoint'))
    assert all(torch.equal(imported[k], v) for k, v in state.items())
    again = resolve_base(str(out))            # the product folder starts a run in turn
    assert (again.arch, again.checkpoint) == ('siamrpn_alex', spec.path('checkpoint'))
    assert again.tracker == spec.tracker and again.tracker.step.instance_size == 287
    seq = load_sequence(need(SEQUENCES / 'Crossing'))
    frames = [read_frame(p) for p in seq.frames[:4]]
    for backend in ('onnxruntime', 'torch'):
        tracker = load_tracker(out, backend=backend)
        tracker.init(frames[0], seq.init_box)
        for frame in frames[1:]:
            res = tracker.update(frame)
            assert res.box.is_finite() and 0.0 <= res.score <= 1.0


def test_neck_trains_with_the_head_backbone_frozen(tmp_path):
    checkpoint, start = _pysot_snapshot(tmp_path, 'siamrpn_mobilev2')
    cfg = load_config(None, _small(checkpoint, 'siamrpn_mobilev2', [
        'steps=1', 'batch_size=1', 'optim.optimizer=adamw', 'optim.lr=0.001']))
    result = train(cfg, tmp_path / 'run', progress=False)
    state = read_state_dict(result.weights)
    begin = start.state_dict()
    for key in ('backbone.layer0.0.weight', 'backbone.layer7.0.conv.0.weight'):
        assert torch.equal(state[key], begin[key])
    for key in ('neck.downsample2.downsample.0.weight', 'rpn_head.rpn4.loc.head.3.weight'):
        assert not torch.equal(state[key], begin[key]), key


def test_refusals_name_what_to_change(tmp_path):
    checkpoint, _ = _pysot_snapshot(tmp_path)
    for extra, words in ((['modules.st_fusion=true'], 'NanoTrack only'),
                         (['modules.margin_weight=0.5', 'modules.tafa=true'],
                          'modules.margin_weight, modules.tafa'),
                         (['sampler.label_assignment=centre_distance'], 'anchor labels')):
        cfg = load_config(None, _small(checkpoint, 'siamrpn_alex', ['steps=1', *extra]))
        with pytest.raises(ConfigError, match=words):
            train(cfg, tmp_path / 'refused', progress=False)
    with pytest.raises(ConfigError, match='set arch .*siamrpn_alex'):
        train(load_config(None, _small(checkpoint, '', ['steps=1'])), tmp_path / 'refused',
              progress=False)
    with pytest.raises(ConfigError, match='does not fit the siamrpn_mobilev2'):
        train(load_config(None, _small(checkpoint, 'siamrpn_mobilev2', ['steps=1'])),
              tmp_path / 'refused', progress=False)
