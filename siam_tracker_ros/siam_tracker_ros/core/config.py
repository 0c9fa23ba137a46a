"""
Frozen configuration dataclasses; every default lives here once.

``TrackerConfig`` groups the tracker's settings by the policy they belong to (``step``,
``update``, ``confidence``, ``longterm``, ``distractor``, ``motion``). Outside the core they
are addressed by stable flat names (``update_interval``, ``lt_lost_frames``, ...): the ROS
parameters ``tracker.<flat name>``, ``siam-eval --set``, presets, ``load_tracker`` keywords
and the model manifest all use them. ``TrackerConfig.replace(**flat)``, ``flat()``,
``from_mapping`` and ``describe`` are the one bridge between the two.

The ROS node declares its parameters from these dataclasses (field metadata carries the
description and the allowed range), and a model manifest overrides the defaults with the values
the weights were tuned with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple


def param(default: Any, description: str, low: Optional[float] = None,
          high: Optional[float] = None, runtime: bool = False, flat: Optional[str] = None,
          choices: Optional[Tuple[str, ...]] = None):
    """
    Declare a dataclass field with a description and an optional [low, high] range.

    ``runtime`` marks values that may change while tracking (thresholds), as opposed to
    values that need a new tracker (crop geometry). ``flat`` overrides the field's flat name
    (group prefix + field name); ``choices`` lists the allowed strings of a text field.
    """
    return field(default=default, metadata={
        'description': description, 'low': low, 'high': high, 'runtime': runtime,
        'flat': flat, 'choices': choices})


@dataclass(frozen=True)
class StepConfig:
    """The plain Siamese step: SiamRPN++ / NanoTrack crop geometry and selection."""

    PREFIX = ''

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


@dataclass(frozen=True)
class UpdateConfig:
    """Template update (core/template_update.py): gated moving average on template features."""

    PREFIX = 'update_'

    interval: int = param(
        10, 'try a template update every N frames (one extra template-branch run); 0 = off',
        0, 10000, runtime=True)
    rate: float = param(
        0.1, 'moving-average rate a of the template update: z = (1 - a) z + a f(box)',
        0.0, 1.0, runtime=True)
    init_weight: float = param(
        0.5, 'weight of the initial template in the template the tracker matches with',
        0.0, 1.0, runtime=True)
    min_confidence: float = param(
        0.9, 'confidence a frame needs before its box may update the template (and below '
        'which the appearance check runs)', 0.0, 1.0, runtime=True)
    min_agreement: float = param(
        0.5, 'cosine similarity to the initial template features a new sample needs',
        -1.0, 1.0, runtime=True)


# Logistic coefficients of the confidence (core/confidence.py FEATURES order), fitted with
# `siam-eval --fit-confidence` on the 13 dev sequences and the generated long-term set, two
# starts each, NanoTrack v3 (docs/longterm-experiments.md, "The score cue and the confidence
# fit"). Without / with the appearance cues.
CHEAP_COEFFICIENTS = (-2.4166, 0.6019, 1.3163, -0.0755)
FULL_COEFFICIENTS = (-4.07, 0.5397, 1.1572, -0.1389, 3.0101, 0.3575)


@dataclass(frozen=True)
class ConfidenceConfig:
    """The confidence (core/confidence.py): a logistic model of P(IoU >= 0.5) from the cues."""

    PREFIX = 'conf_'

    found_threshold: float = param(
        0.3, 'confidence at or above which the target counts as found (state TRACKING)',
        0.0, 1.0, runtime=True, flat='found_threshold')
    appearance: str = param(
        'periodic', 'appearance check (the box re-encoded by the template branch, compared '
        "with the initial template): 'periodic' = on every frame unless it is certain "
        '(conf_appearance_certain) while the appearance holds still, and every '
        "conf_appearance_interval frames; 'off' = never (cheaper; re-acquisition is then "
        "verified with the initial template's score)", runtime=True,
        choices=('periodic', 'off'))
    appearance_interval: int = param(
        10, "frames between appearance checks while the frames are certain ('periodic'; "
        '1 = every frame)', 1, 10000, runtime=True)
    appearance_certain: float = param(
        0.97, 'confidence without the appearance at or above which a tracked frame is '
        'certain: while the appearance holds still (its last measurement near its recent '
        'level) the check then runs only every conf_appearance_interval frames', 0.0, 1.0,
        runtime=True)
    strong_score: float = param(
        0.5, 'peak score (times the distractor factor, relative to the first frame) at or above '
        'which the peak is strong: a strong peak whose appearance agrees '
        '(conf_strong_appearance, conf_strong_change) is never evidence of loss', 0.0, 2.0,
        runtime=True)
    strong_appearance: float = param(
        0.0, 'appearance similarity (relative to the first frame) at or above which it agrees '
        'with the initial template for conf_strong_score', 0.0, 2.0, runtime=True)
    strong_change: float = param(
        0.15, "largest drop of the appearance below the target's recent level (running mean "
        'on confident frames) at which it still agrees, for conf_strong_score', 0.0, 2.0,
        runtime=True)
    motion_allowance: float = param(
        0.5, 'jump (target sizes) from the predicted position that is plausible on top of '
        "the target's measured speed", 0.05, 10.0, runtime=True)
    coefficients: Tuple[float, ...] = param(
        CHEAP_COEFFICIENTS, 'logistic coefficients without the appearance cue: bias, score, '
        'sharpness, motion (refit with siam-eval --fit-confidence)', runtime=True)
    coefficients_appearance: Tuple[float, ...] = param(
        FULL_COEFFICIENTS, 'logistic coefficients with the appearance cues: bias, score, '
        'sharpness, motion, appearance, appearance change', runtime=True)


@dataclass(frozen=True)
class LongTermConfig:
    """TRACKING / LOST / SEARCHING and local-to-global re-detection (core/longterm.py)."""

    PREFIX = 'lt_'

    enabled: bool = param(
        True, 'hold the published box on evidence of loss, search local-to-global and '
        're-acquire; off = the plain step moves the box on every frame', runtime=True)
    lost_frames: int = param(
        3, 'consecutive LOST frames (confidence below found_threshold) before SEARCHING', 1, 1000,
        runtime=True)
    redetect_threshold: float = param(
        0.7, 'confidence a candidate needs to be re-acquired while searching', 0.0, 1.0,
        runtime=True)
    verify_ratio: float = param(
        0.5, 'appearance similarity to the initial template (relative to its first-frame '
        'level) a re-acquired candidate needs', 0.0, 2.0, runtime=True)
    reacquire_speed: float = param(
        0.05, 'target sizes per frame since the target was last tracked with re-acquisition '
        'confidence that a re-acquired match may lie from where it was lost (plus one size); '
        'a verified match farther away is remembered as a look-alike; 0 = no limit',
        0.0, 100.0, runtime=True)
    return_margin: float = param(
        0.05, 'after a loss, a box at found_threshold confidence (below '
        'lt_redetect_threshold) is the target again only if its appearance is within this '
        "of the target's recent appearance level (what took the target's place mostly "
        'looks different)', 0.0, 2.0, runtime=True)
    search_growth: float = param(
        0.5, "target sizes per lost frame the search reach grows by (on top of the target's "
        'measured speed); windows beyond the reach wait', 0.0, 100.0, runtime=True)
    tiles_per_frame: int = param(
        4, 'search windows within the reach run per searching frame, besides the window at '
        'the predicted position', 1, 64, runtime=True)
    trail: bool = param(
        True, "while lost, the plain step keeps following the target from the step's match on "
        'the frame it was lost, if that match was a strong peak within the plausible jump (one '
        'more search window per lost frame, until its peak weakens); its match is re-acquired '
        'when sure (lt_redetect_threshold or a strong peak, verified) wherever it has gone',
        runtime=True)
    search_scale_step: float = param(
        1.3, 'each searching frame also runs the window at the predicted position for the '
        'target this factor larger and smaller, in turn (a target that comes back nearer or '
        'farther); 1 = off', 1.0, 4.0, runtime=True)


@dataclass(frozen=True)
class DistractorConfig:
    """Distractor memory (core/distractors.py)."""

    PREFIX = 'distractor_'

    enabled: bool = param(
        True, 'remember strong secondary peaks and penalise candidates on them', runtime=True)
    ratio: float = param(
        0.5, 'secondary peak score relative to the chosen one (and confidence of a masked-'
        'target probe peak) that counts as a distractor', 0.0, 1.0, runtime=True)
    probe_interval: int = param(
        10, 'every N confident frames, run the search once more with the target masked out '
        'to find look-alikes the score map suppresses; 0 = never', 0, 10000, runtime=True)
    penalty: float = param(
        0.8, 'how much a candidate on a remembered distractor loses (0 none, 1 all)',
        0.0, 1.0, runtime=True)
    memory: int = param(
        150, 'frames a distractor is remembered after it was last seen', 1, 100000,
        runtime=True)


@dataclass(frozen=True)
class MotionConfig:
    """Motion model (core/motion.py) and camera motion (core/camera_motion.py)."""

    PREFIX = 'motion_'

    kalman: bool = param(
        False, 'constant-velocity Kalman filter on centre and size places the search window '
        'through low-confidence frames and occlusions', runtime=True)
    camera: bool = param(
        False, 'while the target is not tracked (LOST / SEARCHING), carry the place it was '
        'last seen along with the camera motion measured by sparse optical flow (pans, '
        'zooms, a drone turning)', runtime=True)
    recenter: float = param(
        0.0, "when the step's box moved more than this many target sizes from the crop centre "
        '(within the plausible jump), run the search once more centred on it and take its box '
        "where it stays within half the first one's size: the cosine window and the head no "
        'longer see a fast target off-centre (one more search-branch run on those frames); '
        "0 = off (the authors' single pass)", 0.0, 10.0, runtime=True)


@dataclass(frozen=True)
class TrackerConfig:
    """Every setting of the tracker, grouped by policy (flat names at the edges)."""

    step: StepConfig = field(default_factory=StepConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)
    longterm: LongTermConfig = field(default_factory=LongTermConfig)
    distractor: DistractorConfig = field(default_factory=DistractorConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def replace(self, **changes: Any) -> 'TrackerConfig':
        """Return a copy with some fields changed, by flat name (validated)."""
        return from_mapping(TrackerConfig, changes, base=self, strict=True)

    def flat(self) -> Dict[str, Any]:
        """Every setting by its flat name."""
        return {name: getattr(getattr(self, group), attr)
                for name, (group, attr) in FLAT_FIELDS.items()}


def _flat_fields() -> Dict[str, Tuple[str, str]]:
    out = {}
    for top in dataclasses.fields(TrackerConfig):
        cls = top.default_factory
        for f in dataclasses.fields(cls):
            out[f.metadata.get('flat') or cls.PREFIX + f.name] = (top.name, f.name)
    return out


# flat name -> (group, field), in declaration order.
FLAT_FIELDS: Dict[str, Tuple[str, str]] = _flat_fields()

# The fields a model's weights were tuned with: the ones a model manifest records (flat names).
# Everything else (thresholds, policies) takes its default here or a user override.
MODEL_FIELDS = ('exemplar_size', 'instance_size', 'context_amount', 'penalty_k',
                'window_influence', 'lr', 'conf_coefficients', 'conf_coefficients_appearance')

# Named sets of policy switches (flat overrides for TrackerConfig / load_tracker). 'plain'
# is the authors' tracker bit for bit; 'default' is what TrackerConfig() holds (the ablation on
# the 13 dev sequences and the generated long-term set chose it); the others are the ablation
# steps.
PRESETS: Dict[str, Dict[str, Any]] = {
    'plain': {'update_interval': 0, 'lt_enabled': False, 'distractor_enabled': False,
              'motion_kalman': False, 'motion_camera': False, 'motion_recenter': 0.0,
              'conf_appearance': 'off'},
    'update': {'update_interval': 10, 'lt_enabled': False, 'distractor_enabled': False,
               'motion_kalman': False, 'motion_camera': False, 'conf_appearance': 'off'},
    'redetect': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': False,
                 'motion_kalman': False, 'motion_camera': False, 'conf_appearance': 'periodic'},
    'distractors': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': True,
                    'motion_kalman': False, 'motion_camera': False,
                    'conf_appearance': 'periodic'},
    'motion': {'update_interval': 10, 'lt_enabled': True, 'distractor_enabled': True,
               'motion_kalman': True, 'motion_camera': False, 'conf_appearance': 'periodic'},
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


def _check(config, name: str, f: dataclasses.Field) -> None:
    value = getattr(config, f.name)
    low, high = f.metadata.get('low'), f.metadata.get('high')
    choices = f.metadata.get('choices')
    if choices is not None and value not in choices:
        raise ValueError(f'{name}={value!r} is not one of {", ".join(choices)}')
    if isinstance(f.default, tuple):
        if len(value) != len(f.default):
            raise ValueError(f'{name} needs {len(f.default)} numbers, got {len(value)}')
        return
    if low is not None and value < low or high is not None and value > high:
        raise ValueError(f'{name}={value!r} is outside [{low}, {high}]')


def validated(config: TrackerConfig) -> TrackerConfig:
    """Check every setting of a TrackerConfig against its range or choices; return it."""
    for name, (group, attr) in FLAT_FIELDS.items():
        sub = getattr(config, group)
        _check(sub, name, sub.__dataclass_fields__[attr])
    return config


def _coerce(default: Any, value: Any) -> Any:
    """Return a value in its field's type: lists to tuples of floats, ints to floats."""
    if isinstance(default, tuple):
        return tuple(float(v) for v in value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_mapping(cls, values: Mapping[str, Any], base=None, strict: bool = False):
    """
    Build a TrackerConfig (``cls``) from a mapping of flat names, over ``base``.

    Keys that are not settings are ignored, or refused with ``strict``.
    """
    start = base if base is not None else cls()
    unknown = sorted(set(values) - set(FLAT_FIELDS))
    if strict and unknown:
        raise ValueError(f'unknown tracker settings {unknown}')
    groups: Dict[str, Dict[str, Any]] = {}
    for name, value in values.items():
        if name in FLAT_FIELDS:
            group, attr = FLAT_FIELDS[name]
            default = getattr(getattr(start, group), attr)
            groups.setdefault(group, {})[attr] = _coerce(default, value)
    changed = {group: dataclasses.replace(getattr(start, group), **attrs)
               for group, attrs in groups.items()}
    return validated(dataclasses.replace(start, **changed))


def describe(cls) -> Tuple[Tuple[str, Any, str, Optional[float], Optional[float], bool], ...]:
    """Return (name, default, description, low, high, runtime) per setting of TrackerConfig."""
    rows = []
    defaults = cls()
    for name, (group, attr) in FLAT_FIELDS.items():
        f = getattr(defaults, group).__dataclass_fields__[attr]
        m = f.metadata
        description = m.get('description', '')
        rows.append((name, f.default, description, m.get('low'), m.get('high'),
                     bool(m.get('runtime'))))
    return tuple(rows)
