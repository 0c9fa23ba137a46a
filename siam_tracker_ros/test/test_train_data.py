"""
siam-train's data side: readers, pair sampler geometry and labels, loader, losses, config.

Everything runs on small folders and images the tests write themselves (no ../shared needed).
"""
from dataclasses import replace
import math
from pathlib import Path

import cv2
import needs_torch  # noqa: F401
import numpy as np
import pytest
from siam_tracker_ros.core.crop import context_size, crop_window
from siam_tracker_ros.io.sequences import Sequence
from siam_tracker_ros.train.config import (ConfigError, DataSource, load_config,
                                           SamplerConfig)
from siam_tracker_ros.train.datasets import (load_source, read_got10k, read_lasot,
                                             read_sequence_folders)
from siam_tracker_ros.train.loader import make_loader, PairDataset
from siam_tracker_ros.train.losses import cls_loss, iou_loss
from siam_tracker_ros.train.pairs import Geometry, PairSampler, point_labels
import torch

V3 = Geometry(exemplar_size=127, instance_size=255, score_size=15, stride=16,
              context_amount=0.5)
V1 = replace(V3, score_size=16)
# No jitter, no colour: crops are exactly the tracker's.
PLAIN = SamplerConfig(template_shift=0.0, template_scale=0.0, search_shift=0.0,
                      search_scale=0.0, search_aspect=0.0, search_blur=0.0, color=0.0,
                      negative=0.0, pos_num=0, neg_num=0)
RECIPE = Path(__file__).resolve().parents[1] / 'config' / 'train' / 'nanotrack_v3_cpu.yaml'


def _frame(box, size=(240, 320), seed=0) -> np.ndarray:
    """Return a dark noisy frame with a white target filling ``box`` (x, y, w, h)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8)
    x, y, w, h = (int(v) for v in box)
    image[y:y + h, x:x + w] = 255
    return image


def _write_frames(folder: Path, boxes, size=(240, 320)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, box in enumerate(boxes):
        ok = box if np.isfinite(box).all() and box[2] > 0 else (10, 10, 20, 20)
        cv2.imwrite(str(folder / f'{i + 1:08d}.jpg'), _frame(ok, size, seed=i))


def _gt_text(boxes) -> str:
    return ''.join(','.join(f'{v:g}' for v in b) + '\n' for b in boxes)


def _boxes(n: int):
    return [np.array([100.0 + 3 * i, 80.0 + 2 * i, 40.0, 30.0]) for i in range(n)]


def _synthetic(name: str, boxes, size=(240, 320), root: Path = None) -> Sequence:
    """Return a sequence of frames the test writes to ``root`` (a project sequence folder)."""
    folder = root / name
    _write_frames(folder / 'img', boxes, size)
    (folder / 'groundtruth.txt').write_text(_gt_text(boxes))
    return read_sequence_folders(root, [name])[0]


# -- readers ------------------------------------------------------------------------------

def test_got10k_reader_respects_absence(tmp_path):
    boxes = _boxes(6)
    boxes[4] = np.array([0.0, 0.0, 0.0, 0.0])          # no area: unusable too
    for name in ('GOT-10k_Train_000002', 'GOT-10k_Train_000001'):
        seq = tmp_path / 'train' / name
        _write_frames(seq, boxes)
        (seq / 'groundtruth.txt').write_text(_gt_text(boxes))
        (seq / 'absence.label').write_text('0\n0\n1\n0\n0\n0\n')
        (seq / 'cover.label').write_text('8\n8\n0\n8\n8\n8\n')
    seqs = read_got10k(tmp_path)
    assert [s.name for s in seqs] == ['GOT-10k_Train_000001', 'GOT-10k_Train_000002']
    gt = seqs[0].gt
    assert len(seqs[0]) == 6 and gt.shape == (6, 4)
    assert np.isnan(gt[2]).all() and np.isnan(gt[4]).all()
    np.testing.assert_array_equal(gt[[0, 1, 3, 5]], np.array(boxes)[[0, 1, 3, 5]])
    (tmp_path / 'train' / 'list.txt').write_text('GOT-10k_Train_000002\n')
    only = load_source(DataSource(kind='got10k', root=str(tmp_path), max_frames=3))
    assert [s.name for s in only] == ['GOT-10k_Train_000002'] and len(only[0]) == 3
    with pytest.raises(ValueError, match='no sequence nope'):
        read_got10k(tmp_path, ['nope'])


def test_lasot_reader_respects_occlusion_and_out_of_view(tmp_path):
    boxes = _boxes(5)
    for name in ('cat-1', 'cat-2', 'dog-1'):
        seq = tmp_path / name.split('-')[0] / name
        _write_frames(seq / 'img', boxes)
        (seq / 'groundtruth.txt').write_text(_gt_text(boxes))
        (seq / 'full_occlusion.txt').write_text('0,1,0,0,0')
        (seq / 'out_of_view.txt').write_text('0,0,0,1,0')
    seqs = read_lasot(tmp_path, ['cat'])
    assert [s.name for s in seqs] == ['cat-1', 'cat-2']
    hidden = np.isnan(seqs[0].gt).any(axis=1)
    assert hidden.tolist() == [False, True, False, True, False]
    assert [s.name for s in read_lasot(tmp_path, ['dog-1'])] == ['dog-1']
    (tmp_path / 'dog' / 'dog-1' / 'out_of_view.txt').write_text('0,1')
    with pytest.raises(ValueError, match='2 flags for 5 frames'):
        read_lasot(tmp_path, ['dog'])


def test_sampler_never_uses_hidden_frames(tmp_path):
    boxes = _boxes(8)
    for i in (0, 3, 6):
        boxes[i] = np.full(4, np.nan)
    seq = tmp_path / 'train' / 'a'
    _write_frames(seq, boxes)
    (seq / 'groundtruth.txt').write_text(
        _gt_text([b if np.isfinite(b).all() else np.array([5.0, 5, 9, 9]) for b in boxes]))
    (seq / 'absence.label').write_text('1\n0\n0\n1\n0\n0\n1\n0\n')
    seqs = read_got10k(tmp_path)
    cfg = replace(SamplerConfig(), negative=0.5, hard_negative=1.0, frame_gap=3)
    sampler = PairSampler(seqs, cfg, V3, history=3, frames=3)
    hidden = {0, 3, 6}
    kinds = set()
    for i in range(60):
        pair = sampler.sample(np.random.default_rng([1, i]))
        kinds.add(pair.kind)
        assert pair.template_frame not in hidden
        assert not hidden & set(pair.history_frames)
        assert pair.search_frame not in hidden
        assert pair.template_frame <= min(pair.history_frames) <= max(
            pair.history_frames) <= pair.search_frame
        assert pair.previous_frames == (max(pair.search_frame - 2, 0),
                                        max(pair.search_frame - 1, 0))
        assert pair.templates.shape == (3, 3, 127, 127)
        assert pair.searches.shape == (3, 3, 255, 255)
    assert kinds == {'positive', 'hard'}


# -- geometry and labels ------------------------------------------------------------------

def test_plain_crops_are_crop_window_crops(tmp_path):
    seq = _synthetic('s', [np.array([130.3, 95.6, 41.0, 27.0])] * 2, root=tmp_path)
    pair = PairSampler([seq], PLAIN, V3).sample(np.random.default_rng(0))
    x, y, w, h = seq.gt[0]
    center = (x + (w - 1) / 2, y + (h - 1) / 2)
    s_z = context_size(w, h, 0.5)
    crops = []
    for index, side, out in ((pair.template_frame, s_z, 127),
                             (pair.search_frame, s_z * 255 / 127, 255)):
        image = cv2.imread(str(seq.frames[index]))
        pad = tuple(float(np.floor(c)) for c in cv2.mean(image)[:3])   # the tracker's
        crops.append(crop_window(image, center, max(int(round(side)), 1), out, pad))
    template, search = crops
    np.testing.assert_array_equal(pair.templates[0], template.transpose(2, 0, 1))
    np.testing.assert_array_equal(pair.searches[-1], search.transpose(2, 0, 1))
    scale = 127 / s_z
    np.testing.assert_allclose(pair.box, [0.0, 0.0, w * scale, h * scale], atol=1e-9)


@pytest.mark.parametrize('geometry', [V3, V1], ids=['15x15', '16x16'])
@pytest.mark.parametrize('k', [(0, 0), (2, 0), (-3, 1), (1, -4)])
def test_target_shifted_by_k_strides_labels_k_cells_off(tmp_path, geometry, k):
    kx, ky = k
    box = np.array([150.0, 110.0, 40.0, 40.0])        # 63.5 crop pixels: one positive
    seq = _synthetic('s', [box], size=(320, 400), root=tmp_path)
    sampler = PairSampler([seq], PLAIN, geometry)
    window = sampler.search_window(box, None)
    scale = 255 / window.width
    moved = window.moved(-kx * geometry.stride / scale, -ky * geometry.stride / scale)
    rel = moved.relative(box, 255)
    np.testing.assert_allclose(rel[:2], [kx * 16, ky * 16], atol=1e-9)
    cls, reg, weight = point_labels(rel, geometry, PLAIN, np.random.default_rng(0))
    mid = geometry.score_size // 2                     # the point at the crop centre
    rows, cols = np.nonzero(cls == 1)
    assert list(zip(rows, cols)) == [(mid + ky, mid + kx)]
    np.testing.assert_array_equal(weight, cls == 1)
    half_w, half_h = rel[2] / 2, rel[3] / 2
    np.testing.assert_allclose(reg[:, mid + ky, mid + kx], [half_w, half_h, half_w, half_h],
                               rtol=1e-6)
    # The crop agrees: the white target's centroid sits k strides from the crop centre, up
    # to the tracker's integer window (pysot's rounding moves it by up to ~2.5 crop pixels).
    image = cv2.imread(str(seq.frames[0]))
    crop = moved.crop(image, 255, (0, 0, 0)).max(axis=2)
    ys, xs = np.nonzero(crop > 200)
    assert abs(xs.mean() - (127 + 16 * kx)) < 3 and abs(ys.mean() - (127 + 16 * ky)) < 3


def test_label_assignments_count_by_hand():
    box = np.array([0.0, 0.0, 64.0, 64.0])
    ellipse, _, _ = point_labels(box, V3, PLAIN, np.random.default_rng(0))
    # semi-axes 16: only the centre point is strictly inside; 12 points within 2 strides
    # (radius 32) besides it are ignored.
    assert (ellipse == 1).sum() == 1 and (ellipse == -1).sum() == 12
    assert (ellipse == 0).sum() == 225 - 13
    centre = replace(PLAIN, label_assignment='centre_distance', centre_pos_radius=1.0,
                     centre_neg_radius=2.0)
    dist, _, weight = point_labels(box, V3, centre, np.random.default_rng(0))
    assert (dist == 1).sum() == 5                      # the centre and its 4 neighbours
    assert (dist == -1).sum() == 8                     # 4 diagonals (1.41) + 4 at 2 strides
    assert (dist == 0).sum() == 225 - 13 and weight.sum() == 5
    capped = replace(SamplerConfig(), label_assignment='ellipse')
    big = np.array([0.0, 0.0, 200.0, 200.0])
    cls, _, _ = point_labels(big, V3, capped, np.random.default_rng(0))
    assert (cls == 1).sum() == capped.pos_num and (cls == 0).sum() == capped.neg_num


def test_flip_mirrors_the_labels(tmp_path):
    box = np.array([150.0, 110.0, 48.0, 40.0])
    seq = _synthetic('s', [box, box + [20, 0, 0, 0]], size=(320, 400), root=tmp_path)
    cfg = replace(PLAIN, search_shift=40.0)
    plain = PairSampler([seq], cfg, V3).sample(np.random.default_rng(5))
    flipped = PairSampler([seq], replace(cfg, flip=1.0), V3).sample(np.random.default_rng(5))
    np.testing.assert_array_equal(flipped.searches, plain.searches[..., ::-1])
    np.testing.assert_array_equal(flipped.templates, plain.templates[..., ::-1])
    assert flipped.box[0] == -plain.box[0]
    np.testing.assert_array_equal(flipped.cls_label, plain.cls_label[:, ::-1])
    np.testing.assert_allclose(flipped.reg_target[[2, 1, 0, 3]][..., ::-1], plain.reg_target,
                               atol=1e-4)


def test_negatives_have_no_positive_labels_and_miss_the_target(tmp_path):
    a = _synthetic('a', _boxes(5), root=tmp_path)
    b = _synthetic('b', [np.array([30.0, 40.0, 30.0, 50.0])] * 5, root=tmp_path)
    cfg = replace(SamplerConfig(), negative=1.0, hard_negative=0.5, color=0.0,
                  search_blur=0.0)
    sampler = PairSampler([a, b], cfg, V3)
    kinds = set()
    for i in range(40):
        pair = sampler.sample(np.random.default_rng([2, i]))
        kinds.add(pair.kind)
        assert pair.negative and pair.kind in ('semantic', 'hard')
        assert (pair.cls_label == 0).all() and not pair.reg_weight.any()
        assert np.isnan(pair.box).all()
        if pair.kind == 'hard':
            assert pair.search_sequence == pair.sequence
            assert pair.searches[-1].max() < 200       # no pixel of the white target
        else:
            assert pair.search_sequence != pair.sequence
    assert kinds == {'semantic', 'hard'}


# -- loader -------------------------------------------------------------------------------

def test_loader_batches_depend_only_on_seed_and_step(tmp_path):
    seq = _synthetic('s', _boxes(6), root=tmp_path)
    sampler = PairSampler([seq], SamplerConfig(), V3, history=2, frames=3)
    dataset = PairDataset(sampler, seed=7)
    first = list(make_loader(dataset, 2, 0, 3, num_workers=0))
    workers = list(make_loader(dataset, 2, 0, 3, num_workers=2))
    resumed = list(make_loader(dataset, 2, 1, 3, num_workers=0))
    assert len(first) == 3 and len(resumed) == 2
    assert first[0]['templates'].shape == (2, 2, 3, 127, 127)
    assert first[0]['searches'].shape == (2, 3, 3, 255, 255)
    assert first[0]['cls_label'].shape == (2, 15, 15)
    assert first[0]['reg_target'].shape == (2, 4, 15, 15)
    assert first[0]['negative'].dtype == torch.bool
    for a, b in zip(first, workers):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for a, b in zip(first[1:], resumed):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(first[0]['searches'], first[1]['searches'])
    other = list(make_loader(PairDataset(sampler, seed=8), 2, 0, 1))
    assert not torch.equal(first[0]['searches'], other[0]['searches'])
    cycled = PairDataset(sampler, seed=7, unique_pairs=2)
    np.testing.assert_array_equal(cycled[5]['searches'], cycled[1]['searches'])


# -- losses -------------------------------------------------------------------------------

def test_cls_loss_balances_positives_and_negatives_and_ignores():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)                 # p(target) = 0.75
    logits[0, 1, 0, 1] = math.log(1 / 3.0)             # p(target) = 0.25, a negative
    labels = torch.tensor([[[1.0, 0.0, -1.0]]])
    want = 0.5 * -math.log(0.75) + 0.5 * -math.log(0.75)
    assert cls_loss(logits, labels).item() == pytest.approx(want, rel=1e-6)
    assert cls_loss(logits, torch.full((1, 1, 3), -1.0)).item() == 0.0


def test_iou_losses_by_hand():
    pred = torch.ones(1, 4, 1, 2)
    target = torch.full((1, 4, 1, 2), 2.0)
    weight = torch.tensor([[[1.0, 0.0]]])
    iou = 5.0 / 17.0                                   # (4 + 1) / (16 + 1), +1 smoothing
    assert iou_loss(pred, target, weight, 'iou').item() == pytest.approx(-math.log(iou))
    assert iou_loss(pred, target, weight, 'linear_iou').item() == pytest.approx(1 - iou)
    assert iou_loss(pred, target, weight, 'giou').item() == pytest.approx(1 - iou)
    assert iou_loss(target, target, weight, 'iou').item() == pytest.approx(0.0, abs=1e-7)
    assert iou_loss(pred, target, torch.zeros(1, 1, 2), 'iou').item() == 0.0


# -- config -------------------------------------------------------------------------------

def test_recipe_loads_and_overrides_apply():
    cfg = load_config(RECIPE, ['optim.lr=0.002', 'modules.st_fusion=true', 'steps=5'])
    assert cfg.optim.lr == 0.002 and cfg.steps == 5
    assert cfg.history == 1 + cfg.modules.st_memory and cfg.frames == 1
    assert cfg.freeze_backbone and cfg.data.sources[0].kind == 'sequences'
    assert load_config(None, ['modules.tafa=true']).frames == 3
    assert load_config(None, ['optim.lr=1e-4']).optim.lr == 1e-4    # YAML 1.1: a string
    with pytest.raises(ConfigError, match='unknown setting optim.lrate'):
        load_config(RECIPE, ['optim.lrate=1'])
    with pytest.raises(ConfigError, match='sampler.label_assignment must be one of'):
        load_config(None, ['sampler.label_assignment=iou'])
    with pytest.raises(ConfigError, match='sampler.flip is a probability'):
        load_config(None, ['sampler.flip=2'])
    with pytest.raises(ConfigError, match='steps must be an integer'):
        load_config(None, ['steps=1.5'])
    with pytest.raises(ConfigError, match='adv_dropout_budget must be in'):
        load_config(None, ['modules.adv_dropout_budget=1.5'])


def test_gpu_recipe_is_pysot_scale_and_takes_the_data_roots():
    recipe = RECIPE.with_name('nanotrack_v3_got10k_lasot_gpu.yaml')
    cfg = load_config(recipe, ['data.sources=[{kind: got10k, root: /d/got10k}, '
                               '{kind: lasot, root: /d/lasot}]'])
    assert [(s.kind, s.root) for s in cfg.data.sources] == [('got10k', '/d/got10k'),
                                                            ('lasot', '/d/lasot')]
    assert cfg.device == 'cuda' and cfg.amp and cfg.batch_size == 32
    assert cfg.steps == 5 * 600000 // 32          # 5 epochs of pysot's 600,000 pairs
    assert cfg.optim.module_lr_scale > 1
