"""
The learned modules (nets.modules) and nets.train_net.TrainNet.

For every module: output shapes (NanoTrack v1/v2: 48 channels, 16x16 maps; v3: 96 channels,
15x15 maps), gradients reaching every parameter (the zero-initialised gates after one
backward, every other parameter after one optimizer step), and the base network left
bit-identical (torch.equal on cls and reg) both when the module is off and when it is on but
untrained. The real NanoTrack v3 weights come from ../shared/reference-models (override with
SIAM_SHARED); those tests are skipped with the reason where it is absent, the random-init
ones always run.
"""
import copy
import math

import needs_torch  # noqa: F401
import pytest
from shared_data import V3_WEIGHTS
from siam_tracker_ros.nets.modules.attention import from_tokens, to_tokens
from siam_tracker_ros.nets.modules.da_attention import DAAttention
from siam_tracker_ros.nets.modules.layer_aggregation import (backbone_levels, default_levels,
                                                             LayerAggregation)
from siam_tracker_ros.nets.modules.margin import margin_loss
from siam_tracker_ros.nets.modules.st_fusion import STFusion
from siam_tracker_ros.nets.modules.tafa import (adversarial_channel_mask, FeatureModulation,
                                                kl_divergence, TemporalShift)
from siam_tracker_ros.nets.nanotrack import NanoTrack
from siam_tracker_ros.nets.registry import build_net, load_weights
from siam_tracker_ros.nets.train_net import cls_output_layer, LearnedModules, TrainNet
import torch
from torch.nn.functional import cross_entropy

# Module switches of LearnedModules that add parameters -> the TrainNet attribute.
PARAM_MODULES = ('st_fusion', 'da_attention', 'tafa', 'feature_modulation',
                 'layer_aggregation')
# Parameters that get a gradient on the very first backward (the zero-initialised gates).
GATES = {'st_fusion': {'gate'}, 'da_attention': {'search_gate', 'template_gate'},
         'tafa': {'gate'}, 'feature_modulation': {'mlp.2.weight', 'mlp.2.bias'},
         'layer_aggregation': {'weight'}}
ALL_ON = LearnedModules(margin_weight=1.0, st_fusion=True, da_attention=True, tafa=True,
                        feature_modulation=True, adv_dropout_weight=1.0,
                        layer_aggregation=True)


def _random_base(version: int = 3, seed: int = 0) -> NanoTrack:
    torch.manual_seed(seed)
    net = NanoTrack(version)
    # Non-trivial BN statistics, so eval mode is not the identity on every BN.
    gen = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope='module')
def real_v3() -> NanoTrack:
    if not V3_WEIGHTS.is_file():
        pytest.skip(f'{V3_WEIGHTS} is absent (needs ../shared)')
    return load_weights(build_net('nanotrack_v3'), V3_WEIGHTS)


def _crops(batch: int = 2, h: int = 4, f: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, h, 3, 127, 127, generator=gen) * 255.0,
            torch.rand(batch, f, 3, 255, 255, generator=gen) * 255.0)


def _only(name: str, **extra) -> LearnedModules:
    return LearnedModules(**{name: True}, **extra)


def _assert_same(out, cls, reg):
    assert torch.equal(out['cls'], cls)
    assert torch.equal(out['reg'], reg)


# ------------------------------------------------------------------ configuration

def test_defaults_are_all_off():
    cfg = LearnedModules()
    assert not cfg.any_on
    net = TrainNet(_random_base())
    assert all(getattr(net, name) is None for name in PARAM_MODULES)
    assert {n.split('.')[0] for n, _ in net.named_parameters()} == {'base'}
    assert _only('tafa').any_on and LearnedModules(margin_weight=0.1).any_on


@pytest.mark.parametrize('field, value', [('margin_weight', -1.0), ('margin', float('nan')),
                                          ('st_memory', 0), ('tafa_channels', 0),
                                          ('adv_dropout_budget', 0.0),
                                          ('adv_dropout_budget', 1.0),
                                          ('adv_dropout_weight', -0.5)])
def test_invalid_settings_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        LearnedModules(**{field: value})


def test_tafa_channels_must_fit():
    with pytest.raises(ValueError, match='tafa_channels'):
        TrainNet(_random_base(1), LearnedModules(tafa=True, tafa_channels=25))  # 2 * 25 > 48


# ------------------------------------------------------------------ bit-identical base

def _check_all_off(base: NanoTrack):
    t, s = _crops()
    with torch.no_grad():
        cls, reg = base(t[:, 0], s[:, -1])
        net = TrainNet(base)
        _assert_same(net(t[:, :1], s[:, -1:]), cls, reg)
        _assert_same(net(t, s), cls, reg)  # later templates / earlier searches are unused
        assert net.extra_losses(net(t, s), {'cls_label': torch.zeros(2, 15, 15)}) == {}
    # Training mode (batch statistics in BN): same numbers, same running-stat updates.
    ref, wrapped = copy.deepcopy(base).train(), TrainNet(copy.deepcopy(base)).train()
    cls, reg = ref(t[:, 0], s[:, -1])
    _assert_same(wrapped(t[:, :1], s[:, -1:]), cls, reg)
    for (name, a), b in zip(ref.state_dict().items(), wrapped.base.state_dict().values()):
        assert torch.equal(a, b), name


def test_all_off_is_the_base_random_init():
    _check_all_off(_random_base())


def test_all_off_is_the_base_real_weights(real_v3):
    _check_all_off(real_v3)


def _check_untrained_is_identity(base: NanoTrack, name: str):
    t, s = _crops(seed=3)
    with torch.no_grad():
        cls, reg = base(t[:, 0], s[:, -1])
        net = TrainNet(base, _only(name)).eval()
        assert getattr(net, name) is not None
        _assert_same(net(t, s), cls, reg)
        _assert_same(net(t[:, :1], s[:, -1:]), cls, reg)


@pytest.mark.parametrize('name', PARAM_MODULES)
def test_untrained_module_leaves_base_random_init(name):
    _check_untrained_is_identity(_random_base(), name)


@pytest.mark.parametrize('name', PARAM_MODULES)
def test_untrained_module_leaves_base_real_weights(real_v3, name):
    _check_untrained_is_identity(real_v3, name)


def test_loss_only_modules_leave_outputs(real_v3):
    t, s = _crops(seed=4)
    base = copy.deepcopy(real_v3).train()
    cls, reg = copy.deepcopy(base)(t[:, 0], s[:, -1])
    net = TrainNet(base, LearnedModules(margin_weight=1.0, adv_dropout_weight=1.0)).train()
    out = net(t[:, :1], s[:, -1:])
    _assert_same(out, cls, reg)
    assert out['cls_adv'].shape == cls.shape and not torch.equal(out['cls_adv'], cls)


# ------------------------------------------------------------------ shapes

@pytest.mark.parametrize('version, channels, size', [(1, 48, 16), (2, 48, 16), (3, 96, 15)])
def test_all_modules_shapes(version, channels, size):
    net = TrainNet(_random_base(version), ALL_ON).train()
    t, s = _crops()
    out = net(t, s)
    assert out['cls'].shape == (2, 2, size, size)
    assert out['reg'].shape == (2, 4, size, size)
    assert out['cls_adv'].shape == (2, 2, size, size)
    assert out['zf'].shape == (2, channels, 8, 8)
    assert out['xf'].shape == (2, channels, 16, 16)
    label = torch.zeros(2, size, size)
    label[:, size // 2, size // 2] = 1.0
    losses = net.extra_losses(out, {'cls_label': label})
    assert set(losses) == {'margin', 'adv_kl'}
    assert all(v.dim() == 0 and math.isfinite(v.item()) for v in losses.values())
    # Fewer templates and search frames than the modules can use are allowed.
    out = net(t[:, :1], s[:, -1:])
    assert out['cls'].shape == (2, 2, size, size)
    net.eval()
    assert 'cls_adv' not in net(t, s)


def test_tokens_round_trip():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    tokens = to_tokens(x)
    assert tokens.shape == (2, 20, 3)
    assert torch.equal(tokens[1, 6], x[1, :, 1, 1])
    assert torch.equal(from_tokens(tokens, 4, 5), x)


@pytest.mark.parametrize('memory', [1, 3])
def test_st_fusion_shapes_and_fill_rule(memory):
    torch.manual_seed(0)
    fusion = STFusion(96, (8, 8)).eval()
    with torch.no_grad():
        fusion.gate.normal_()
        zf = torch.randn(2, 96, 8, 8)
        out = fusion(zf, torch.randn(2, memory, 96, 8, 8))
        assert out.shape == (2, 96, 8, 8)
        # Slots filled with the initial features give the output of a single copy.
        filled = fusion(zf, zf[:, None].expand(2, memory, 96, 8, 8))
        torch.testing.assert_close(filled, fusion(zf, zf[:, None]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='built for'):
        fusion(torch.randn(1, 48, 8, 8), torch.randn(1, 1, 48, 8, 8))


def test_da_attention_shapes():
    torch.manual_seed(0)
    da = DAAttention(48)
    with torch.no_grad():
        da.search_gate.fill_(1.0)
        da.template_gate.fill_(1.0)
    zf, xf = torch.randn(2, 48, 8, 8), torch.randn(2, 48, 16, 16)
    z2, x2 = da(zf, xf)
    assert z2.shape == zf.shape and x2.shape == xf.shape
    assert not torch.equal(z2, zf) and not torch.equal(x2, xf)


def test_temporal_shift_takes_k_channels_from_t1_and_t2():
    shift = TemporalShift(96, 8)
    cur = torch.full((1, 96, 4, 4), 3.0)
    prev = torch.stack((torch.full((1, 96, 4, 4), 1.0), torch.full((1, 96, 4, 4), 2.0)), 1)
    out = shift.shifted(cur, prev)        # prev[:, 0] = t-2, prev[:, 1] = t-1
    assert torch.equal(out[:, :8], torch.full((1, 8, 4, 4), 2.0))
    assert torch.equal(out[:, 8:16], torch.full((1, 8, 4, 4), 1.0))
    assert torch.equal(out[:, 16:], torch.full((1, 80, 4, 4), 3.0))
    # Missing neighbours: t-1 stands in for t-2, then frame t for both.
    one = shift.shifted(cur, prev[:, 1:])
    assert torch.equal(one[:, :16], torch.full((1, 16, 4, 4), 2.0))
    assert torch.equal(shift.shifted(cur, None), cur)
    assert shift(cur, prev).shape == cur.shape


def test_feature_modulation_shapes():
    torch.manual_seed(0)
    film = FeatureModulation(96)
    with torch.no_grad():
        film.mlp[2].weight.normal_()
    zf, xf = torch.randn(2, 96, 8, 8), torch.randn(2, 96, 16, 16)
    out = film(zf, xf)
    assert out.shape == xf.shape and not torch.equal(out, xf)


@pytest.mark.parametrize('version, levels', [(1, (3, 6)), (3, (3, 6, 8))])
def test_layer_aggregation_levels_and_shapes(version, levels):
    base = _random_base(version)
    features = base.backbone.features
    assert default_levels(features) == levels
    agg = LayerAggregation(features).eval()
    with torch.no_grad():
        agg.weight.fill_(0.5)
        for side, out_side in ((127, 8), (255, 16)):
            x = torch.rand(1, 3, side, side) * 255.0
            found, final = backbone_levels(features, x, agg.levels)
            assert torch.equal(final, base.backbone(x))
            assert found[0].shape[-1] == 2 * out_side  # the stride-8 level
            out = agg.extract(features, x)
            assert out.shape == (1, base.backbone.out_channels, out_side, out_side)
            assert not torch.equal(out, final)


# ------------------------------------------------------------------ gradients

def _task_loss(out, size: int):
    label = torch.zeros(out['cls'].shape[0], size, size, dtype=torch.long)
    label[:, size // 2 - 1:size // 2 + 2, size // 2 - 1:size // 2 + 2] = 1
    return cross_entropy(out['cls'], label) + (out['reg'] - 2.0).abs().mean()


def _nonzero(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


@pytest.mark.parametrize('name', PARAM_MODULES)
def test_gradients_reach_every_module_parameter(name):
    net = TrainNet(_random_base(seed=5), _only(name)).train()
    module = getattr(net, name)
    params = dict(module.named_parameters())
    assert GATES[name] <= set(params)
    t, s = _crops(seed=6)
    _task_loss(net(t, s), 15).backward()
    assert all(_nonzero(params[g]) for g in GATES[name]), 'the gates get no gradient'
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    opt.step()
    opt.zero_grad()
    _task_loss(net(t, s), 15).backward()
    dead = [n for n, p in params.items() if not _nonzero(p)]
    assert not dead, f'{name}: no gradient after one step for {dead}'


def test_margin_and_adversarial_terms_reach_the_head():
    net = TrainNet(_random_base(seed=7),
                   LearnedModules(margin_weight=1.0, adv_dropout_weight=1.0)).train()
    t, s = _crops(h=1, f=1, seed=8)
    label = torch.zeros(2, 15, 15)
    label[:, 6:9, 6:9] = 1.0
    out = net(t, s)
    losses = net.extra_losses(out, {'cls_label': label})
    assert set(losses) == {'margin', 'adv_kl'}
    layer = cls_output_layer(net.base.ban_head)
    for term in ('margin', 'adv_kl'):
        net.zero_grad()
        assert losses[term].item() > 0
        losses[term].backward(retain_graph=True)
        assert _nonzero(layer[0].weight), term
        assert _nonzero(net.base.backbone.features[0][0].weight), term


# ------------------------------------------------------------------ the losses

def test_margin_loss_hand_computed():
    # 1 pair, 2x2 map: positive at (0, 0) with score 0.9, background 0.3 and 0.6, one ignored.
    scores = torch.tensor([[0.9, 0.3], [0.6, 0.99]])
    cls = torch.stack((torch.zeros(2, 2), torch.logit(scores)))[None]
    label = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]])
    # hinge: relu(0.5 - (0.9 - 0.3)) = 0, relu(0.5 - (0.9 - 0.6)) = 0.2 -> mean 0.1
    assert float(margin_loss(cls, label, 0.5)) == pytest.approx(0.1, abs=1e-6)
    assert float(margin_loss(cls, label, 0.25)) == pytest.approx(0.0, abs=1e-7)
    # A negative pair (no positives) does not count; alone it gives 0 with a graph.
    neg_cls = cls.clone().requires_grad_(True)
    both = margin_loss(torch.cat((cls, neg_cls)), torch.cat((label, torch.zeros(1, 2, 2))),
                       0.5)
    assert both.item() == pytest.approx(0.1, abs=1e-6)
    zero = margin_loss(neg_cls, torch.zeros(1, 2, 2), 0.5)
    zero.backward()
    assert zero.item() == 0.0 and neg_cls.grad is not None
    with pytest.raises(ValueError, match='cls_label'):
        margin_loss(cls, label[0], 0.5)


def test_adversarial_mask_is_within_budget_and_adversarial():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(96, 2, 1)
    feats = torch.rand(4, 96, 15, 15) * 3.0
    clean = layer(feats).detach()
    budget, wins = 0.1, 0
    for seed in range(8):
        mask = adversarial_channel_mask(layer, feats, clean, budget,
                                        torch.Generator().manual_seed(seed))
        start = (torch.rand(4, 96, generator=torch.Generator().manual_seed(seed))
                 >= budget).float()
        assert mask.shape == (4, 96, 1, 1) and not mask.requires_grad
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        flipped = (mask.flatten(1) != start).sum(1)
        assert int(flipped.max()) <= round(budget * 96)
        kl_adv = kl_divergence(clean, layer(feats * mask))
        kl_start = kl_divergence(clean, layer(feats * start[:, :, None, None]))
        wins += int(kl_adv > kl_start)
    assert wins == 8
    assert layer.weight.grad is None  # finding the mask leaves parameter grads alone
