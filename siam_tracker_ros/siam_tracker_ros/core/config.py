"""
Frozen configuration dataclasses; every default lives here once.

The ROS node declares its parameters from these dataclasses (field metadata carries the
description and the allowed range), and a model manifest overrides the defaults with the values
the weights were tuned with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple


def param(default: Any, description: str, low: Optional[float] = None,
          high: Optional[float] = None, runtime: bool = False):
    """
    Declare a dataclass field with a description and an optional [low, high] range.

    ``runtime`` marks values that may change while tracking (thresholds), as opposed to
    values that need a new tracker (crop geometry).
    """
    return field(default=default, metadata={
        'description': description, 'low': low, 'high': high, 'runtime': runtime})


@dataclass(frozen=True)
class TrackerConfig:
    """Hyper-parameters of the Siamese tracker (SiamRPN++/NanoTrack conventions)."""

    exemplar_size: int = param(127, 'template crop side in pixels', 32, 512)
    instance_size: int = param(255, 'search crop side in pixels', 64, 1024)
    context_amount: float = param(0.5, 'context added around the target: (w + h) * amount',
                                  0.0, 2.0)
    penalty_k: float = param(0.15, 'scale / aspect-ratio change penalty strength', 0.0, 1.0,
                             runtime=True)
    window_influence: float = param(0.49, 'weight of the cosine window against the score',
                                    0.0, 1.0, runtime=True)
    lr: float = param(0.385, 'size smoothing rate (scaled by the penalised score)', 0.0, 1.0,
                      runtime=True)
    min_size: float = param(10.0, 'smallest box side in pixels after clipping', 1.0, 100.0)
    found_threshold: float = param(
        0.3, 'confidence at or above which the target counts as found', 0.0, 1.0, runtime=True)
    # Template update (core/template_update.py): gated moving average on template features.
    update_interval: int = param(
        10, 'try a template update every N frames (one extra template-branch run); 0 = off',
        0, 10000, runtime=True)
    update_rate: float = param(
        0.1, 'moving-average rate a of the template update: z = (1 - a) z + a f(box)',
        0.0, 1.0, runtime=True)
    update_init_weight: float = param(
        0.5, 'weight of the initial template in the template the tracker matches with',
        0.0, 1.0, runtime=True)
    update_min_confidence: float = param(
        0.9, 'confidence a frame needs before its box may update the template', 0.0, 1.0,
        runtime=True)
    update_min_agreement: float = param(
        0.5, 'cosine similarity to the initial template features a new sample needs',
        -1.0, 1.0, runtime=True)
    # Honest confidence and the TRACKING / LOST / SEARCHING state machine (core/longterm.py).
    lt_enabled: bool = param(
        True, 'calibrated confidence, lost detection and local-to-global re-detection',
        runtime=True)
    lt_lost_frames: int = param(
        3, 'consecutive LOST frames (confidence below found_threshold) before SEARCHING', 1, 1000,
        runtime=True)
    lt_redetect_threshold: float = param(
        0.7, 'confidence a candidate needs to be re-acquired while searching', 0.0, 1.0,
        runtime=True)
    lt_verify_ratio: float = param(
        0.5, 'appearance similarity to the initial template (relative to its first-frame '
        'level, see conf_appearance_*) a re-acquired candidate needs', 0.0, 2.0, runtime=True)
    lt_reacquire_speed: float = param(
        0.05, 'target sizes per frame since the target was last tracked with re-acquisition '
        'confidence that a re-acquired match may lie from where it was lost (plus one size); '
        'a verified match farther away is remembered as a look-alike; 0 = no limit',
        0.0, 100.0, runtime=True)
    lt_local_frames: int = param(
        6, 'searching frames spent around the last position before scanning the frame',
        0, 1000, runtime=True)
    lt_tiles_per_frame: int = param(
        4, 'search windows of the global scan run per searching frame', 1, 64, runtime=True)
    conf_appearance_interval: int = param(
        10, 'verify the chosen box against the initial template (one extra template-branch '
        'run: feature cosine similarity) every N confident frames, and on every frame that '
        'is not confidently tracked; 0 = never', 0, 10000, runtime=True)
    conf_appearance_low: float = param(
        0.4, 'appearance similarity (relative to the first frame) at or below which the '
        'appearance term of the confidence is 0', 0.0, 2.0, runtime=True)
    conf_appearance_high: float = param(
        0.55, 'appearance similarity (relative to the first frame) at or above which the '
        'appearance term of the confidence is 1', 0.0, 2.0, runtime=True)
    conf_sharpness_weight: float = param(
        0.5, 'exponent of the peak-sharpness term of the confidence', 0.0, 4.0, runtime=True)
    conf_motion_weight: float = param(
        1.0, 'exponent of the motion-plausibility term of the confidence', 0.0, 4.0,
        runtime=True)
    conf_motion_sigma: float = param(
        0.5, 'width (in target sizes) of the Gaussian that scores the jump of the peak from '
        'where the target was expected', 0.05, 10.0, runtime=True)
    # Distractor memory (core/distractors.py).
    distractor_enabled: bool = param(
        True, 'remember strong secondary peaks and penalise candidates on them', runtime=True)
    distractor_ratio: float = param(
        0.5, 'secondary peak score relative to the chosen one (and confidence of a masked-'
        'target probe peak) that counts as a distractor', 0.0, 1.0, runtime=True)
    distractor_probe_interval: int = param(
        10, 'every N confident frames, run the search once more with the target masked out '
        'to find look-alikes the score map suppresses; 0 = never', 0, 10000, runtime=True)
    distractor_penalty: float = param(
        0.8, 'how much a candidate on a remembered distractor loses (0 none, 1 all)',
        0.0, 1.0, runtime=True)
    distractor_memory: int = param(
        150, 'frames a distractor is remembered after it was last seen', 1, 100000,
        runtime=True)
    # Motion model (core/motion.py).
    motion_kalman: bool = param(
        False, 'constant-velocity Kalman filter on centre and size places the search window '
        'through low-confidence frames and occlusions', runtime=True)
    motion_camera: bool = param(
        False, 'while the target is not tracked (LOST / SEARCHING), carry the place it was '
        'last seen along with the camera motion measured by sparse optical flow (pans, '
        'zooms, a drone turning)', runtime=True)

    def replace(self, **changes: Any) -> 'TrackerConfig':
        """Return a copy with some fields changed (validated)."""
        return validated(dataclasses.replace(self, **changes))


# The fields a model's weights were tuned with: the ones a model manifest records. Everything
# else (thresholds, policies) takes its default here or a user override, never a frozen copy.
MODEL_FIELDS = ('exemplar_size', 'instance_size', 'context_amount', 'penalty_k',
                'window_influence', 'lr')

# Named sets of policy switches (keyword overrides for TrackerConfig / load_tracker). 'plain'
# is the authors' tracker bit for bit; 'default' is what TrackerConfig() holds (the ablation on
# the 13 dev sequences and the generated long-term set chose it); the others are the ablation
# steps.
PRESETS: Dict[str, Dict[str, Any]] = {
    'plain': {'update_interval': 0, 'lt_enabled': False, 'distractor_enabled': False,
              'motion_kalman': False, 'motion_camera': False},
    'update': {'update_interval': 10, 'lt_enabled': False, 'distractor_enabled': False,
               'motion_kalman': False, 'motion_camera': False},
    'redetect': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': False,
                 'motion_kalman': False, 'motion_camera': False},
    'distractors': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': True,
                    'motion_kalman': False, 'motion_camera': False},
    'motion': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': True,
               'motion_kalman': True, 'motion_camera': False},
}
PRESETS['default'] = dict(PRESETS['distractors'])


def preset(name: str) -> Dict[str, Any]:
    """
    Return the overrides of a named preset.

    For example ``load_tracker(path, **preset('plain'))``.
    """
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}; choose one of {sorted(PRESETS)}')
    return dict(PRESETS[name])


def validated(config):
    """Check every field of a config dataclass against its declared range; return it."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        low, high = f.metadata.get('low'), f.metadata.get('high')
        if low is not None and value < low or high is not None and value > high:
            raise ValueError(f'{type(config).__name__}.{f.name}={value!r} is outside '
                             f'[{low}, {high}]')
    return config


def from_mapping(cls, values: Mapping[str, Any], base=None):
    """Build config ``cls`` from a mapping, ignoring keys that are not fields of it."""
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in values.items() if k in names}
    start = base if base is not None else cls()
    return validated(dataclasses.replace(start, **known))


def describe(cls) -> Tuple[Tuple[str, Any, str, Optional[float], Optional[float], bool], ...]:
    """(name, default, description, low, high, runtime) for every field of a config class."""
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        out.append((f.name, f.default, m.get('description', ''), m.get('low'), m.get('high'),
                    bool(m.get('runtime'))))
    return tuple(out)
