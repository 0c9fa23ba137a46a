"""
The tracker's long-term behaviour on scripted scenes and the scripted backend (no ../shared).

The scripted backend (scripted_backend.py) stands in for the network: its score and regression
maps come in closed form from the crops of frames whose content a script sets frame by frame
(where the target is, how strong, where a look-alike is). With it the state machine
(TRACKING -> LOST -> SEARCHING -> TRACKING), the template-update gating and re-acquisition are
tested frame by frame, through the real SiameseTracker, load_tracker and the registry's plugin
route.
"""
import math

import numpy as np
import pytest

import scripted_backend as sb
from scripted_backend import Actor, render
from siam_tracker_ros.backends.base import BackendError
from siam_tracker_ros.core.crop import to_blob
from siam_tracker_ros.core.decode import AnchorFreeDecoder
from siam_tracker_ros.core.manifest import load_manifest, ModelError
from siam_tracker_ros.core.template_update import cosine
from siam_tracker_ros.core.types import BBox, TrackState
from siam_tracker_ros.eval.metrics import iou
from siam_tracker_ros.factory import load_tracker

PLUGIN = 'scripted_backend:create'
T, L, S = TrackState.TRACKING, TrackState.LOST, TrackState.SEARCHING


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    return sb.write_model_dir(tmp_path_factory.mktemp('scripted') / 'model')


def run(tracker, script):
    """Init on frame 0's target, update on the rest; (results, frames)."""
    frames = [render(actors) for actors in script]
    tracker.init(frames[0], BBox(*script[0][0].box))
    return [tracker.update(f) for f in frames[1:]], frames


def box_iou(result, actor) -> float:
    return float(iou(np.array([result.box.as_tuple()]), np.array([actor.box]))[0])


# --- the stand-in itself ---------------------------------------------------------------------

def test_model_dir_is_a_verified_model_and_loads_through_the_plugin_route(model_dir, tmp_path):
    spec = load_manifest(model_dir)
    assert (spec.family, spec.decoder, spec.layout, spec.stride) == (
        'scripted', 'anchor_free', 'template_search', 16)
    assert spec.path('template') == spec.path('search') == model_dir.resolve() / 'scripted.json'
    assert len(spec.sha256['search']) == 64
    tracker = load_tracker(model_dir, backend=PLUGIN)
    assert tracker.backend.name == 'scripted' and tracker.backend.device == 'cpu'
    corrupt = sb.write_model_dir(tmp_path / 'corrupt')
    (corrupt / 'scripted.json').write_text('{"kind": "scripted", "gain": 1}\n')
    with pytest.raises(ModelError, match='corrupt or changed'):
        load_tracker(corrupt, backend=PLUGIN)


def not_a_backend(spec, device, **options):
    return {'spec': spec, 'device': device}


def test_plugin_backend_names_fail_with_a_reason(model_dir):
    cases = [('no_such_module_xyz:create', 'cannot import'),
             ('scripted_backend:nothing_here', 'no callable'),
             ('scripted_backend:', 'package.module:factory'),
             (':create', 'package.module:factory'),
             ('test_scripted_tracker:not_a_backend', 'lacks the Backend interface')]
    for name, reason in cases:
        with pytest.raises(BackendError, match=reason):
            load_tracker(model_dir, backend=name)
    with pytest.raises(BackendError, match='CPU only'):
        load_tracker(model_dir, backend=PLUGIN, device='cuda')
    with pytest.raises(BackendError, match='plugin package.module:factory'):
        load_tracker(model_dir, backend='scripted')


def test_backend_maps_put_the_peak_and_box_on_the_target(model_dir):
    spec = load_manifest(model_dir)
    backend = sb.create(spec)
    # A crop is the frame itself here: the target's 40x40 square at the centre of a 127 window
    # and, for the search, 32 px right of the centre of a 255 window (scale 1).
    template = render([Actor(44, 44)], 127, 127)
    search = render([Actor(107 + 32, 107), Actor(28, 28, color=sb.LOOKALIKE)], 255, 255)
    features = backend.encode_template(to_blob(template))
    assert features[0].shape == (1, 3, 64, 64) and features[0].dtype == np.float32
    cls, reg = backend.track(features, to_blob(search))
    assert cls.shape == (1, 2, 15, 15) and reg.shape == (1, 4, 15, 15)
    cands = AnchorFreeDecoder(16).decode(cls, reg)
    best = int(np.argmax(cands.scores))
    # The cell 32 px right of the centre holds the target (row 7, column 7 + 32 / 16 = 9).
    assert divmod(best, 15) == (7, 9)
    assert cands.scores[best] == pytest.approx(sigmoid(sb.GAIN * 0.5), abs=0.01)
    cx, cy, w, h = cands.boxes[:, best]
    assert (cx, cy) == (pytest.approx(32.0, abs=1.5), pytest.approx(0.0, abs=1.5))
    assert (w, h) == (pytest.approx(40.0, abs=4.0), pytest.approx(40.0, abs=4.0))
    # The look-alike's cell (its centre is 80 px up and left of the crop's: row and column
    # 7 - 5 = 2) scores about the colour similarity, empty background about nothing.
    assert 0.8 < cands.scores[2 * 15 + 2] < cands.scores[best]
    assert cands.scores[7 * 15 + 2] < 0.02
    # Appearance: same crop 1, shifted by a tenth of the box about 0.9, empty crop 0.
    shifted = render([Actor(48, 44)], 127, 127)
    empty = render([], 127, 127)
    assert cosine(features, backend.encode_template(to_blob(template))) == pytest.approx(1.0)
    assert 0.8 < cosine(features, backend.encode_template(to_blob(shifted))) < 0.99
    assert cosine(features, backend.encode_template(to_blob(empty))) == 0.0


# --- the state machine ------------------------------------------------------------------------

def test_tracking_lost_searching_tracking_frame_by_frame(model_dir):
    # Frames 0-14: the target moves 3 px per frame; 15-29: gone (while gone it moved on);
    # 30-44: back, 45 px from where it was lost, and moving on.
    script = [[Actor(60 + 3 * t, 100) if not 15 <= t < 30 else None] for t in range(45)]
    tracker = load_tracker(model_dir, backend=PLUGIN)
    assert tracker.config.longterm.lost_frames == 3
    assert tracker.config.confidence.found_threshold == 0.3
    results, _ = run(tracker, script)
    states = [r.state for r in results]                   # frames 1..44
    assert states == [T] * 14 + [L, L] + [S] * 13 + [T] * 15
    for t, r in enumerate(results, start=1):
        if r.state == T:
            assert r.confidence >= 0.9, (t, r)
            assert box_iou(r, script[t][0]) >= 0.85, (t, r)
        else:
            assert r.confidence < 0.01, (t, r)
    # Not tracked: the published box stays where the target was last seen.
    held = {r.box for r in results[14:29]}
    assert held == {results[13].box}
    # The re-acquired frame needs the re-detection confidence, not just found_threshold.
    assert results[29].confidence >= tracker.config.longterm.redetect_threshold
    assert tracker.longterm.sure_frame == 44 and tracker.longterm.low_frames == 0


def test_a_short_gap_is_lost_and_tracked_again_without_searching(model_dir):
    script = [[Actor(80 + 2 * t, 90) if t not in (10, 11) else None] for t in range(20)]
    results, _ = run(load_tracker(model_dir, backend=PLUGIN), script)
    assert [r.state for r in results] == [T] * 9 + [L, L] + [T] * 8
    assert results[11].confidence >= 0.9 and box_iou(results[11], script[12][0]) >= 0.85


def test_confidence_follows_the_targets_strength(model_dir):
    # A fading target: the confidence (the logistic model of the cues) falls with its contrast
    # while it is tracked; a faint one is LOST (below found_threshold), then searched for.
    alphas = [1.0] * 6 + [0.8] * 3 + [0.6] * 3 + [0.25] * 3
    script = [[Actor(100 + t, 80, alpha=a)] for t, a in enumerate(alphas)]
    results, _ = run(load_tracker(model_dir, backend=PLUGIN), script)
    by_alpha = {}
    for r, a in zip(results, alphas[1:]):
        by_alpha.setdefault(a, []).append(r.confidence)
    assert min(by_alpha[1.0]) > max(by_alpha[0.8]) > 0.3
    assert min(by_alpha[0.8]) > max(by_alpha[0.6])
    assert max(by_alpha[0.25]) < 0.3
    assert [r.state for r in results[-3:]] == [L, L, S]
    assert all(r.state == T for r in results[:-3])


# --- template update ---------------------------------------------------------------------------

def test_template_update_only_on_confident_frames_and_the_initial_template_is_kept(model_dir):
    # update_interval 5: samples are due on frames 5, 10, 15, 20, 25, 30. Full contrast up to
    # frame 12 (confidence ~1), contrast 0.6 for 13-22 (tracked, confidence ~0.74 < 0.9),
    # absent from 23 on (lost, then searching).
    def alpha(t):
        return 1.0 if t <= 12 else 0.6 if t <= 22 else 0.0

    script = [[Actor(60 + 2 * t, 100, alpha=alpha(t))] for t in range(31)]
    tracker = load_tracker(model_dir, backend=PLUGIN, update_interval=5)
    frames = [render(actors) for actors in script]
    tracker.init(frames[0], BBox(*script[0][0].box))
    initial = tuple(f.copy() for f in tracker.features)
    updates = []
    for t, frame in enumerate(frames[1:], start=1):
        r = tracker.update(frame)
        updates.append(tracker.updater.updates)
        if 13 <= t <= 22:
            assert r.state == T and r.confidence < tracker.config.update.min_confidence
        if t >= 23:
            assert r.state in (L, S)
    assert updates[4] == 1 and updates[9] == 2            # frames 5 and 10
    assert updates[-1] == 2, updates                     # none at 15, 20 (weak), 25, 30 (lost)
    assert all(np.array_equal(a, b) for a, b in zip(tracker.updater.initial, initial))
    # The template in use mixes the initial one (weight 0.5) with the accumulated one.
    w = tracker.config.update.init_weight
    mixed = [w * z0 + (1 - w) * z for z0, z in zip(initial, tracker.updater.accumulated)]
    assert all(np.allclose(a, b) for a, b in zip(tracker.features, mixed))
    assert not all(np.array_equal(a, b) for a, b in zip(tracker.features, initial))

    # The same scene at full contrast throughout frames 13-22 does take the samples of 15, 20.
    strong = [[Actor(60 + 2 * t, 100, alpha=1.0 if t <= 22 else 0.0)] for t in range(31)]
    control = load_tracker(model_dir, backend=PLUGIN, update_interval=5)
    run(control, strong)
    assert control.updater.updates == 4


# --- re-acquisition ---------------------------------------------------------------------------

def lookalike_script():
    """Target tracked, gone at 15; a look-alike far away from 18 on; target back at 40."""
    script = []
    for t in range(55):
        target = Actor(40 + 3 * min(t, 15), 100) if not 15 <= t < 40 else None
        other = Actor(250, 160, color=sb.LOOKALIKE) if t >= 18 else None
        script.append([target, other])
    return script


def test_target_is_reacquired_and_a_far_lookalike_is_not_taken(model_dir):
    script = lookalike_script()
    tracker = load_tracker(model_dir, backend=PLUGIN)
    results, _ = run(tracker, script)
    states = [r.state for r in results]
    assert states[:14] == [T] * 14
    # Gone: lost, then searching the whole frame, which holds the look-alike from frame 18.
    assert states[14:39] == [L, L] + [S] * 23
    lookalike = script[20][1]
    assert all(box_iou(r, lookalike) == 0.0 for r in results[17:39])
    assert {r.box for r in results[14:39]} == {results[13].box}
    # Seen while searching, beyond the re-acquisition reach: remembered as a look-alike.
    assert any(abs(x - (250 + 20)) < 5 and abs(y - (160 + 20)) < 5
               for x, y, *_ in tracker.distractors.items)
    # The target is back where it was lost: re-acquired at once and tracked.
    assert states[39:] == [T] * 15
    assert all(box_iou(r, script[t][0]) >= 0.85 for t, r in enumerate(results[39:], start=40))


def test_without_the_reach_limit_the_lookalike_is_taken(model_dir):
    # The control of the test above: the look-alike is a confident, verified match, so only
    # the reach keeps the tracker off it.
    script = lookalike_script()
    tracker = load_tracker(model_dir, backend=PLUGIN, lt_reacquire_speed=0.0)
    results, _ = run(tracker, script)
    taken = [t for t, r in enumerate(results, start=1)
             if r.state == T and box_iou(r, script[t][1] or Actor(-99, -99)) >= 0.7]
    assert taken and 18 <= taken[0] < 40, [r.state.name for r in results]
