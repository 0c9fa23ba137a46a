"""Long-term policy objects and the configuration on hand-made inputs (no model, no data)."""
import math

import numpy as np
import pytest

from siam_tracker_ros.core.confidence import (
    ConfidenceEstimator, Cues, peak_to_sidelobe, SIDELOBE_FLOOR)
from siam_tracker_ros.core.config import (describe, FLAT_FIELDS, from_mapping, preset, PRESETS,
                                          TrackerConfig)
from siam_tracker_ros.core.distractors import DistractorMemory
from siam_tracker_ros.core.longterm import LongTermState, tile_centers
from siam_tracker_ros.core.motion import ConstantVelocityKalman
from siam_tracker_ros.core.template_update import cosine, TemplateUpdater
from siam_tracker_ros.core.types import BBox, TrackState


def test_presets_are_valid_configs_and_plain_switches_everything_off():
    for name in PRESETS:
        TrackerConfig().replace(**preset(name))
    plain = TrackerConfig().replace(**preset('plain'))
    assert plain.update.interval == 0 and not plain.longterm.enabled
    assert not plain.distractor.enabled and not plain.motion.kalman and not plain.motion.camera
    assert plain.motion.recenter == 0.0
    assert plain.confidence.appearance == 'off'
    defaults = TrackerConfig().flat()
    assert all(defaults[k] == v for k, v in preset('default').items())
    with pytest.raises(ValueError, match='unknown preset'):
        preset('nope')


def test_every_setting_has_a_description_and_a_stable_flat_name():
    rows = describe(TrackerConfig)
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)) == len(FLAT_FIELDS)
    assert all(r[2] for r in rows), [r[0] for r in rows if not r[2]]
    # The names users have in launch files and scripts stay what they were.
    for name in ('exemplar_size', 'penalty_k', 'found_threshold', 'update_interval',
                 'update_min_confidence', 'lt_enabled', 'lt_lost_frames',
                 'lt_redetect_threshold', 'lt_verify_ratio', 'lt_reacquire_speed',
                 'lt_tiles_per_frame', 'conf_appearance_interval', 'distractor_enabled',
                 'distractor_probe_interval', 'motion_kalman', 'motion_camera'):
        assert name in FLAT_FIELDS, name


def test_flat_names_round_trip_through_the_groups():
    cfg = TrackerConfig().replace(update_interval=3, lt_lost_frames=7, found_threshold=0.2,
                                  conf_appearance='off', conf_coefficients=[1, 2, 3, 4])
    assert cfg.update.interval == 3 and cfg.longterm.lost_frames == 7
    assert cfg.confidence.found_threshold == 0.2 and cfg.confidence.appearance == 'off'
    assert cfg.confidence.coefficients == (1.0, 2.0, 3.0, 4.0)
    assert from_mapping(TrackerConfig, cfg.flat()) == cfg
    assert cfg.step == TrackerConfig().step      # untouched groups stay as they were
    with pytest.raises(ValueError, match='unknown tracker settings'):
        cfg.replace(update_intervall=3)
    with pytest.raises(ValueError, match='update_interval=-1 is outside'):
        cfg.replace(update_interval=-1)
    with pytest.raises(ValueError, match='conf_appearance=.sometimes. is not one of'):
        cfg.replace(conf_appearance='sometimes')
    with pytest.raises(ValueError, match='conf_coefficients needs 4 numbers'):
        cfg.replace(conf_coefficients=(1.0, 2.0))


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


def test_state_machine_holds_the_box_then_searches_and_starts_again():
    lt = LongTermState()
    first, second = BBox(0, 0, 10, 10), BBox(5, 5, 10, 10)
    lt.start(first)
    assert lt.step(True, second, lost_frames=3) == TrackState.TRACKING
    assert lt.held_box == second
    assert [lt.step(False, None, 3) for _ in range(4)] == [
        TrackState.LOST, TrackState.LOST, TrackState.SEARCHING, TrackState.SEARCHING]
    assert lt.held_box == second and lt.lost and lt.low_frames == 4
    assert lt.step(True, first, 3) == TrackState.TRACKING and not lt.lost
    assert lt.low_frames == 0 and lt.held_box == first


def test_search_reach_grows_outward_and_is_bounded_per_frame():
    lt = LongTermState()
    lt.start(BBox(0, 0, 10, 10))
    lt.plan_search(2000, 2000, 100.0, (50.0, 50.0))
    near = lt.next_tiles(4, reach=150.0)
    assert near and all(np.hypot(x - 50, y - 50) <= 150 for x, y in near)
    # Everything within the reach was visited: the plan waits for the reach to grow.
    while lt.next_tiles(4, reach=150.0):
        pass
    assert lt.next_tiles(4, reach=150.0) == []
    wider = lt.next_tiles(4, reach=400.0)
    assert wider and all(150 < np.hypot(x - 50, y - 50) <= 400 for x, y in wider)
    seen = [p for _ in range(200) for p in lt.next_tiles(4, reach=1e9)]
    assert max(np.hypot(x - 50, y - 50) for x, y in seen) > 1500
    assert all(len(lt.next_tiles(4, reach=1e9)) <= 4 for _ in range(50))


def test_confidence_is_a_logistic_model_of_the_cues():
    cfg = TrackerConfig().replace(conf_coefficients=(0.0, 1.0, 1.0, -1.0),
                                  conf_coefficients_appearance=(-1.0, 1.0, 1.0, -1.0, 2.0, 1.0))
    est = ConfidenceEstimator(cfg.confidence)
    est.calibrate(Cues(0.5, 18.0, 0.0))
    # A score of 0.5 (logit 0) at the first frame's sharpness, no jump: every feature is 0, so
    # the confidence is sigmoid(bias).
    assert est(Cues(0.5, 18.0, 0.0)) == pytest.approx(0.5)
    f = est.features(Cues(0.9, 9.0, 20.0, allowance=10.0))
    assert f['score'] == pytest.approx(math.log(9.0))     # absolute logit, not relative
    assert f['sharpness'] == pytest.approx(math.log(0.5)) and f['motion'] == pytest.approx(2.0)
    z = f['score'] + f['sharpness'] - f['motion']
    assert est(Cues(0.9, 9.0, 20.0, allowance=10.0)) == pytest.approx(1 / (1 + math.exp(-z)))
    # Scores a float32 head rounds to 1 keep their logits (up to the clip at 16).
    assert est.features(Cues(1 - 1e-5, 18.0, 0.0))['score'] == pytest.approx(11.513, abs=1e-3)
    assert est.features(Cues(1 - 1e-9, 18.0, 0.0))['score'] == 16.0
    # Each cue moves the confidence its own way; the distractor factor scales the score.
    base = est(Cues(0.9, 18.0, 0.0))
    assert est(Cues(0.6, 18.0, 0.0)) < base and est(Cues(0.9, 6.0, 0.0)) < base
    assert est(Cues(0.9, 18.0, 30.0, allowance=10.0)) < base
    assert est(Cues(0.9, 18.0, 0.0, distractor=0.2)) < base
    # With the appearance: the other coefficient set; the appearance and its change from the
    # recent level both count.
    high = est(Cues(0.5, 18.0, 0.0, appearance=1.0))
    assert high == pytest.approx(1 / (1 + math.exp(-(-1.0 + 2.0 * 1.0 + 0.0))))
    assert est(Cues(0.5, 18.0, 0.0, appearance=0.5)) < high
    est.follow_appearance(Cues(0.5, 18.0, 0.0, appearance=0.0))   # the recent level falls
    assert est(Cues(0.5, 18.0, 0.0, appearance=1.0)) > high


def test_unmeasured_found_frames_count_as_the_last_measured_appearance():
    every, sparse = (ConfidenceEstimator(TrackerConfig().confidence) for _ in range(2))
    for est in (every, sparse):
        est.calibrate(Cues(0.9, 18.0, 0.0))
    # Measured on every frame: the plain running mean at APPEARANCE_RATE (0.3) per frame.
    for _ in range(6):
        every.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.4))
    assert every.recent_appearance == pytest.approx(0.4 + 0.6 * 0.7 ** 6)
    # Certain frames between checks look like the last measured one: 0.9 on frame 1, thirty
    # unmeasured found frames, then an occluder half over the target (0.3). The level moves
    # to 0.9 as if measured thirty times and then one step (0.3) towards 0.3; the single
    # uncertain measurement does not take the level over (a catch-up of all 31 steps at
    # once would put it at 0.3, and every later frame of the target would look changed).
    sparse.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.9))
    for _ in range(30):
        sparse.follow_appearance(Cues(0.9, 18.0, 0.0))
    sparse.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.3))
    held = 0.9 + (0.97 - 0.9) * 0.7 ** 30          # after frame 1 the level is 0.97
    assert sparse.recent_appearance == pytest.approx(held + 0.3 * (0.3 - held))
    assert sparse.recent_appearance > 0.7


def test_appearance_holds_still_only_while_measurements_stay_on_their_level():
    est = ConfidenceEstimator(TrackerConfig().confidence)
    est.calibrate(Cues(0.9, 18.0, 0.0))
    assert not est.appearance_settled              # nothing measured yet
    for _ in range(20):                             # a target that looks the same
        est.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.9))
    assert est.appearance_settled
    # A target turning: each measurement 0.03 lower than the last; the level trails them by
    # more than APPEARANCE_STILL, so the check keeps running on every frame.
    for k in range(1, 6):
        est.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.9 - 0.03 * k))
    assert not est.appearance_settled


def test_a_re_acquired_appearance_starts_the_level_again():
    est = ConfidenceEstimator(TrackerConfig().confidence)
    est.calibrate(Cues(0.9, 18.0, 0.0))
    for _ in range(20):
        est.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.9))
    lost = Cues(0.9, 18.0, 0.0, appearance=0.55)
    assert est.features(lost)['appearance_change'] == pytest.approx(0.55 - 0.9, abs=1e-3)
    # The target came back turned (0.55) and was re-acquired: its look now is the level, and
    # the next frames are judged against it, not against the look from before the loss.
    est.restart_appearance(0.55)
    assert est.features(lost)['appearance_change'] == 0.0
    assert est.appearance_settled
    est.follow_appearance(Cues(0.9, 18.0, 0.0))             # unmeasured: looks like 0.55
    est.follow_appearance(Cues(0.9, 18.0, 0.0, appearance=0.45))
    assert est.recent_appearance == pytest.approx(0.55 + 0.3 * (0.45 - 0.55))


def test_peak_to_sidelobe_prefers_a_single_peak():
    one = np.zeros((15, 15))
    one[7, 7] = 1.0
    two = one.copy()
    two[2, 2] = 0.9
    assert peak_to_sidelobe(one, 7, 7, 2) == pytest.approx(20.0)   # 1 / SIDELOBE_FLOOR
    assert peak_to_sidelobe(two, 7, 7, 2) < 0.5 * peak_to_sidelobe(one, 7, 7, 2)
    # (peak - mean) / (std + floor) of the cells outside the square, at the map's edge too.
    rng = np.random.default_rng(1)
    for row, col, radius in ((7, 7, 2), (0, 14, 3), (3, 1, 1)):
        m = rng.random((15, 15)).astype(np.float32) ** 3
        outside = np.ones((15, 15), dtype=bool)
        outside[max(row - radius, 0):row + radius + 1,
                max(col - radius, 0):col + radius + 1] = False
        side = m[outside].astype(np.float64)
        expected = (m[row, col] - side.mean()) / (side.std() + SIDELOBE_FLOOR)
        assert peak_to_sidelobe(m, row, col, radius) == pytest.approx(expected, rel=1e-9)


def test_distractor_memory_finds_secondary_peaks_and_penalises_them():
    mem = DistractorMemory(TrackerConfig().distractor)
    m = np.zeros((15, 15))
    m[7, 7], m[7, 12], m[1, 1] = 1.0, 0.8, 0.3
    assert mem.secondary_peaks(m, 7, 7, 2, 0.5) == [(7, 12)]
    mem.observe([(200.0, 100.0)], target=(100.0, 100.0), size=(20.0, 20.0), frame=1)
    f = mem.factor(np.array([200.0, 100.0]), np.array([100.0, 100.0]), 20.0, frame=2)
    assert f[0] == pytest.approx(1 - TrackerConfig().distractor.penalty)
    assert f[1] == pytest.approx(1.0)
    # A match seen while searching (no target on the frame) forgets nothing, even near where
    # the target was lost.
    mem.observe([(400.0, 100.0)], target=None, size=(20.0, 20.0), frame=3)
    assert [(x, y) for x, y, *_ in mem.items] == [(200.0, 100.0), (400.0, 100.0)]
    # The target passing over a remembered distractor forgets it.
    mem.observe([], target=(195.0, 100.0), size=(20.0, 20.0), frame=4)
    assert [(x, y) for x, y, *_ in mem.items] == [(400.0, 100.0)]


def test_peaks_within_a_target_size_are_the_target_not_look_alikes():
    points = [(110.0, 100.0), (100.0, 118.0), (125.0, 100.0), (300.0, 40.0)]
    assert DistractorMemory.away_from(points, (100.0, 100.0), (20.0, 20.0)) == [
        (125.0, 100.0), (300.0, 40.0)]
    # A tall target (a walker, a diver): a peak beyond its geometric-mean side (40 px) but
    # within its height is its own far end, one beside it farther than that side is not.
    tall = [(100.0, 150.0), (145.0, 100.0), (100.0, 190.0)]
    assert DistractorMemory.away_from(tall, (100.0, 100.0), (20.0, 80.0)) == [
        (145.0, 100.0), (100.0, 190.0)]
    mem = DistractorMemory(TrackerConfig().distractor)
    mem.observe([(125.0, 100.0)], target=(100.0, 100.0), size=(20.0, 20.0), frame=1)
    assert [(x, y) for x, y, *_ in mem.items] == [(125.0, 100.0)]
    mem.observe([], target=(110.0, 100.0), size=(20.0, 20.0), frame=2)   # the target covers it
    assert mem.items == []


def test_a_look_alike_seen_on_several_frames_is_forgotten_by_a_confident_box_or_inside_one():
    mem = DistractorMemory(TrackerConfig().distractor)
    size = (20.0, 20.0)
    # Frame 1 is confident and sees a spot at (125, 100) once; frames 2 and 3 are not (a strong
    # peak, the confidence lowered) and see a look-alike at (75, 100) on both (twice on frame 3,
    # which counts once).
    mem.observe([(125.0, 100.0)], target=(100.0, 100.0), size=size, frame=1)
    mem.observe([(75.0, 100.0)], target=(100.0, 100.0), size=size, frame=2, confident=False)
    mem.observe([(75.0, 100.0), (76.0, 100.0)], target=(100.0, 100.0), size=size, frame=3,
                confident=False)
    assert [it[3] for it in mem.items] == [1, 2]
    # The target comes within one size of each, still without confidence: the spot seen once
    # is forgotten, the look-alike seen on two frames is kept.
    mem.observe([], target=(110.0, 100.0), size=size, frame=4, confident=False)
    assert [(x, y) for x, y, *_ in mem.items] == [(76.0, 100.0)]
    mem.observe([], target=(90.0, 100.0), size=size, frame=5, confident=False)
    assert [(x, y) for x, y, *_ in mem.items] == [(76.0, 100.0)]
    # A confident box near it forgets it.
    mem.observe([], target=(90.0, 100.0), size=size, frame=6)
    assert mem.items == []
    # Seen again on two frames, it is forgotten by a box that is not confident but has it
    # inside: a look-alike cannot stand where the box on the target is.
    for frame in (7, 8):
        mem.observe([(76.0, 100.0)], target=(100.0, 100.0), size=size, frame=frame,
                    confident=False)
    mem.observe([], target=(90.0, 100.0), size=size, frame=9, confident=False)
    assert len(mem.items) == 1
    mem.observe([], target=(84.0, 100.0), size=size, frame=10, confident=False)
    assert mem.items == []


def test_template_update_keeps_the_initial_template_and_gates_samples():
    cfg = TrackerConfig().replace(update_interval=2, update_rate=0.5, update_init_weight=0.5,
                                  update_min_agreement=0.5)
    up = TemplateUpdater(cfg.update)
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
