"""Long-term policy objects on hand-made inputs (no model, no data)."""
import dataclasses

import numpy as np
import pytest

from siam_tracker_ros.core.confidence import ConfidenceEstimator, Cues, peak_to_sidelobe
from siam_tracker_ros.core.config import preset, PRESETS, TrackerConfig
from siam_tracker_ros.core.distractors import DistractorMemory
from siam_tracker_ros.core.longterm import LongTermState, tile_centers
from siam_tracker_ros.core.motion import ConstantVelocityKalman
from siam_tracker_ros.core.template_update import cosine, TemplateUpdater
from siam_tracker_ros.core.types import BBox


def test_presets_are_valid_configs_and_plain_switches_everything_off():
    for name in PRESETS:
        TrackerConfig().replace(**preset(name))
    plain = TrackerConfig().replace(**preset('plain'))
    assert plain.update_interval == 0 and not plain.lt_enabled
    assert not plain.distractor_enabled and not plain.motion_kalman and not plain.motion_camera
    defaults = TrackerConfig()
    assert all(getattr(defaults, k) == v for k, v in preset('default').items())
    with pytest.raises(ValueError, match='unknown preset'):
        preset('nope')


def test_every_policy_field_has_a_description():
    for f in dataclasses.fields(TrackerConfig):
        assert f.metadata.get('description'), f.name


def test_kalman_follows_constant_velocity_and_coasts_with_damping():
    kf = ConstantVelocityKalman()
    kf.reset((100.0, 50.0), (20.0, 20.0))
    for t in range(1, 30):
        kf.predict()
        kf.correct((100.0 + 4 * t, 50.0 - 2 * t), (20.0, 20.0))
    kf.predict()
    assert kf.center == pytest.approx((100 + 4 * 30, 50 - 2 * 30), abs=1.0)
    x0 = kf.center[0]
    steps = []
    for _ in range(10):
        kf.predict()
        steps.append(kf.center[0] - x0)
        x0 = kf.center[0]
    assert steps[0] > 0 and steps[-1] < steps[0] * 0.5


def test_tiles_cover_the_frame_nearest_first():
    tiles = tile_centers(640, 360, 200.0, (600.0, 300.0))
    pts = np.array(tiles)
    assert pts[:, 0].min() - 100 <= 0 and pts[:, 0].max() + 100 >= 640
    assert pts[:, 1].min() - 100 <= 0 and pts[:, 1].max() + 100 >= 360
    d = np.hypot(pts[:, 0] - 600, pts[:, 1] - 300)
    assert np.all(np.diff(d) >= 0)
    assert tile_centers(100, 80, 200.0, (0, 0)) == [(50.0, 40.0)]


def test_search_plan_is_local_first_then_global():
    lt = LongTermState()
    lt.start(BBox(0, 0, 10, 10))
    lt.plan_search(2000, 2000, 100.0, (50.0, 50.0))
    local = [lt.next_tiles(4, local_frames=3) for _ in range(3)]
    assert all(np.hypot(x - 50, y - 50) <= 200 for f in local for x, y in f)
    later = [p for _ in range(200) for p in lt.next_tiles(4, local_frames=3)]
    assert max(np.hypot(x - 50, y - 50) for x, y in later) > 1500


def test_confidence_is_one_on_reference_cues_and_falls_with_each_cue():
    est = ConfidenceEstimator(TrackerConfig())
    est.calibrate(Cues(0.9, 18.0, 0.0))
    assert est(Cues(0.9, 18.0, 0.0)) == pytest.approx(1.0)
    assert est(Cues(0.45, 18.0, 0.0)) == pytest.approx(0.5)
    assert est(Cues(0.9, 2.0, 0.0)) < 0.5
    assert est(Cues(0.9, 18.0, 1.5)) < 0.1
    assert est(Cues(0.9, 18.0, 0.0), distractor_factor=0.2) == pytest.approx(0.2)


def test_peak_to_sidelobe_prefers_a_single_peak():
    one = np.zeros((15, 15))
    one[7, 7] = 1.0
    two = one.copy()
    two[2, 2] = 0.9
    assert peak_to_sidelobe(one, 7, 7, 2) == pytest.approx(20.0)   # 1 / SIDELOBE_FLOOR
    assert peak_to_sidelobe(two, 7, 7, 2) < 0.5 * peak_to_sidelobe(one, 7, 7, 2)


def test_distractor_memory_finds_secondary_peaks_and_penalises_them():
    mem = DistractorMemory(TrackerConfig())
    m = np.zeros((15, 15))
    m[7, 7], m[7, 12], m[1, 1] = 1.0, 0.8, 0.3
    assert mem.secondary_peaks(m, 7, 7, 2, 0.5) == [(7, 12)]
    mem.observe([(200.0, 100.0)], target=(100.0, 100.0), target_size=20.0, frame=1)
    f = mem.factor(np.array([200.0, 100.0]), np.array([100.0, 100.0]), 20.0, frame=2)
    assert f[0] == pytest.approx(1 - TrackerConfig().distractor_penalty)
    assert f[1] == pytest.approx(1.0)
    # A match seen while searching (no target on the frame) forgets nothing, even near where
    # the target was lost.
    mem.observe([(400.0, 100.0)], target=None, target_size=20.0, frame=3)
    assert [(x, y) for x, y, _ in mem.items] == [(200.0, 100.0), (400.0, 100.0)]
    # The target passing over a remembered distractor forgets it.
    mem.observe([], target=(195.0, 100.0), target_size=20.0, frame=4)
    assert [(x, y) for x, y, _ in mem.items] == [(400.0, 100.0)]


def test_template_update_keeps_the_initial_template_and_gates_samples():
    cfg = TrackerConfig().replace(update_interval=2, update_rate=0.5, update_init_weight=0.5,
                                  update_min_agreement=0.5)
    up = TemplateUpdater(cfg)
    z0 = (np.ones((1, 4, 3, 3), np.float32),)
    up.reset(z0)
    assert not up.due(1, 1.0, True) and up.due(2, 1.0, True)
    assert not up.due(2, 0.1, True) and not up.due(2, 1.0, False)
    assert not up.offer((-np.ones((1, 4, 3, 3), np.float32),))   # disagrees: refused
    assert up.current[0] is up.initial[0]
    assert up.offer((3 * np.ones((1, 4, 3, 3), np.float32),))
    # accumulated = 0.5 * 1 + 0.5 * 3 = 2; current = 0.5 * 1 + 0.5 * 2 = 1.5
    np.testing.assert_allclose(up.current[0], 1.5)
    np.testing.assert_allclose(up.initial[0], 1.0)
    assert cosine(up.current, z0) == pytest.approx(1.0)


def test_appearance_term_ramps_between_its_bounds_and_gates_the_confidence():
    cfg = TrackerConfig()
    est = ConfidenceEstimator(cfg)
    est.calibrate(Cues(0.9, 18.0, 0.0))
    assert est(Cues(0.9, 18.0, 0.0, appearance=1.0)) == pytest.approx(1.0)
    assert est(Cues(0.9, 18.0, 0.0, appearance=cfg.conf_appearance_high)) == pytest.approx(1.0)
    assert est(Cues(0.9, 18.0, 0.0, appearance=cfg.conf_appearance_low)) == 0.0
    mid = 0.5 * (cfg.conf_appearance_low + cfg.conf_appearance_high)
    assert est(Cues(0.9, 18.0, 0.0, appearance=mid)) == pytest.approx(0.5)
