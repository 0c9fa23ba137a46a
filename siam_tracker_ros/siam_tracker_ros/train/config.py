"""
The siam-train configuration: frozen dataclasses, every default here once, loaded from YAML.

The YAML file mirrors the dataclasses: top-level keys are ``TrainConfig`` fields, sections
(``data``, ``sampler``, ``optim``, ``loss``, ``modules``, ``val``) are the nested ones, and
``data.sources`` is a list of ``DataSource`` mappings. A key the dataclasses do not have is an
error naming the known ones. ``--set section.key=value`` overrides (the value is parsed as
YAML) are applied before the dataclasses are built. Relative paths stay as written and are
resolved against the working directory when used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
import typing
from typing import Any, Dict, Iterable, Mapping, Tuple, Union

import yaml

from ..nets.train_net import LearnedModules

DATA_KINDS = ('sequences', 'got10k', 'lasot')
LABEL_ASSIGNMENTS = ('ellipse', 'centre_distance')
IOU_LOSSES = ('iou', 'linear_iou', 'giou')
OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'constant')


class ConfigError(ValueError):
    """A training configuration is malformed or out of range."""


@dataclass(frozen=True)
class DataSource:
    """One training data set: its kind, folder and (optionally) the sequences to use."""

    kind: str = 'sequences'      # 'sequences' (<Name>/img + groundtruth.txt), 'got10k', 'lasot'
    root: str = ''               # the folder (GOT-10k: its root or its train/ split)
    names: Tuple[str, ...] = ()  # sequence names to use (LaSOT: also class names); () = all
    weight: float = 1.0          # share of the pairs drawn from this source
    max_frames: int = 0          # use only the first N frames of each sequence (0 = all)


@dataclass(frozen=True)
class DataConfig:
    """Where pairs come from and how they are loaded."""

    sources: Tuple[DataSource, ...] = ()
    unique_pairs: int = 0        # cycle through this many distinct pairs (0 = fresh every time)
    num_workers: int = 2         # DataLoader worker processes (0 = load in the main process)
    frame_cache: int = 32        # decoded frames kept per loader process


@dataclass(frozen=True)
class SamplerConfig:
    """Pair sampling and augmentation (pysot / NanoTrack defaults) and label assignment."""

    frame_gap: int = 100         # largest |search - template| frame distance
    template_shift: float = 4.0  # template crop shift, uniform in [-s, s] crop pixels
    template_scale: float = 0.05  # template window scale jitter, 1 + uniform(-s, s)
    template_blur: float = 0.0   # probability of motion blur on a template crop
    search_shift: float = 64.0   # SiamRPN++ spatial-aware shift of the target, crop pixels
    search_scale: float = 0.18   # search window scale jitter, 1 + uniform(-s, s)
    search_aspect: float = 0.1   # search window aspect jitter, exp(uniform(+-log(1 + a)))
    search_blur: float = 0.2     # probability of motion blur on a search crop
    color: float = 1.0           # probability of pysot's PCA colour noise per crop
    gray: float = 0.0            # probability of turning a whole pair grey
    flip: float = 0.0            # probability of mirroring a whole pair horizontally
    negative: float = 0.2        # probability of a negative pair (DaSiamRPN)
    hard_negative: float = 0.5   # share of negatives cut from the same sequence off the target
    label_assignment: str = 'ellipse'  # 'ellipse' (NanoTrack/BAN) or 'centre_distance'
    pos_num: int = 16            # keep at most this many positive points/anchors (0 = all)
    neg_num: int = 48            # keep at most this many negative points/anchors (0 = all)
    centre_pos_radius: float = 1.0  # centre_distance: positive within this many strides
    centre_neg_radius: float = 2.0  # centre_distance: negative beyond this many strides
    anchor_pos_iou: float = 0.6  # anchor heads (SiamRPN++): positive above this IoU (pysot)
    anchor_neg_iou: float = 0.3  # anchor heads: negative below this IoU, ignored between


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: str = 'sgd'       # 'sgd' (momentum) or 'adamw'
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 0        # linear warm-up from 0
    schedule: str = 'cosine'     # 'cosine' (to lr * min_lr_ratio) or 'constant'
    min_lr_ratio: float = 0.01
    grad_clip: float = 10.0      # clip the gradient norm (0 = off)
    # The learned modules' lr = lr * this (they start at zero while the pretrained head must
    # stay close to its weights).
    module_lr_scale: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    """Weights of the base losses (the modules' extra terms carry their own weights)."""

    cls_weight: float = 1.0
    reg_weight: float = 1.0      # anchor-free heads (NanoTrack): the IoU loss
    iou: str = 'iou'             # 'iou' (-log IoU, NanoTrack/BAN), 'linear_iou' or 'giou'
    loc_weight: float = 1.2      # anchor heads (SiamRPN++): pysot's L1 delta loss (LOC_WEIGHT)


@dataclass(frozen=True)
class ValConfig:
    """Validation: the real tracker (torch backend) on held-out sequences, logging AUC."""

    sequences: Tuple[str, ...] = ()  # sequence folders (<Name>/img + groundtruth.txt)
    every: int = 0               # validate every N steps (0 = only at the start and the end)
    max_frames: int = 100        # frames of each sequence to track (0 = all)
    preset: str = 'plain'        # tracker preset (core.config.PRESETS)
    at_start: bool = True        # also validate the starting weights (step 0)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    model: str = ''              # model folder (upstream NanoTrack or product) or a .pth file
    arch: str = ''               # network architecture; '' = what the model folder says
    out_dir: str = 'runs/siam-train'
    device: str = 'cpu'          # 'cpu', 'cuda' or 'cuda:N'
    amp: bool = True             # mixed precision (CUDA only; ignored on the CPU)
    seed: int = 0
    steps: int = 1000
    batch_size: int = 16
    threads: int = 0             # torch CPU threads in the main process (0 = torch's default)
    freeze_backbone: bool = True
    freeze_head: bool = False    # train only the learned modules (the rest of the base as given)
    freeze_bn: bool = True       # keep every BatchNorm's running statistics (small batches)
    checkpoint_every: int = 0    # also save a resumable checkpoint every N steps
    log_every: int = 10          # progress line every N steps (when not a terminal)
    tensorboard: bool = True     # TensorBoard scalars (when torch.utils.tensorboard imports)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    modules: LearnedModules = field(default_factory=LearnedModules)
    val: ValConfig = field(default_factory=ValConfig)

    @property
    def history(self) -> int:
        """Template crops per pair (H): 1 + st_memory with ST fusion, else 1."""
        return 1 + self.modules.st_memory if self.modules.st_fusion else 1

    @property
    def frames(self) -> int:
        """Search crops per pair (F): frames t-2, t-1, t with TAFA, else t alone."""
        return 3 if self.modules.tafa else 1


_PROBABILITIES = ('template_blur', 'search_blur', 'color', 'gray', 'flip', 'negative',
                  'hard_negative')
_CHOICES = {('sampler', 'label_assignment'): LABEL_ASSIGNMENTS, ('loss', 'iou'): IOU_LOSSES,
            ('optim', 'optimizer'): OPTIMIZERS, ('optim', 'schedule'): SCHEDULES}


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp`` (dataclasses, tuples, bool/int/float/str), or ConfigError."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f'{where} must be a mapping of {tp.__name__} fields, '
                              f'got {value!r}')
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            value = [value]
        return tuple(_convert(args[0], v, f'{where}[{i}]') for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{where} must be true or false, got {value!r}')
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{where} must be an integer, got {value!r}')
        return value
    if tp is float:
        if isinstance(value, str):         # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{where} must be a number, got {value!r}')
        return float(value)
    if tp is str:
        if value is None:                  # 'model:' with nothing after it
            return ''
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f'{where} must be a string, got {value!r}')
        return value
    raise ConfigError(f'{where}: unsupported field type {tp!r}')


def _build(cls, values: Mapping[str, Any], where: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(f'unknown setting{"s" if len(unknown) > 1 else ""} '
                          f'{", ".join(f"{where}.{k}".lstrip(".") for k in unknown)}; '
                          f'{where or "the top level"} has {", ".join(names)}')
    kwargs = {k: _convert(hints[k], v, f'{where}.{k}'.lstrip('.')) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:     # a dataclass's own checks (LearnedModules)
        raise ConfigError(f'{where or "the top level"}: {exc}') from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check ranges and choices; return ``cfg`` or raise ConfigError saying what is wrong."""
    problems = []
    for key in ('steps', 'batch_size'):
        if getattr(cfg, key) < 1:
            problems.append(f'{key} must be >= 1')
    for key in ('threads', 'checkpoint_every', 'log_every'):
        if getattr(cfg, key) < 0:
            problems.append(f'{key} must be >= 0')
    for key in _PROBABILITIES:
        if not 0.0 <= getattr(cfg.sampler, key) <= 1.0:
            problems.append(f'sampler.{key} is a probability in [0, 1]')
    for (section, key), choices in _CHOICES.items():
        if getattr(getattr(cfg, section), key) not in choices:
            problems.append(f'{section}.{key} must be one of {", ".join(choices)}')
    s = cfg.sampler
    if min(s.frame_gap, s.pos_num, s.neg_num) < 0:
        problems.append('sampler.frame_gap, pos_num and neg_num must be >= 0')
    if min(s.template_shift, s.search_shift, s.template_scale, s.search_scale,
           s.search_aspect) < 0 or max(s.template_scale, s.search_scale) >= 1:
        problems.append('sampler shifts must be >= 0 and scale jitters in [0, 1)')
    if not 0 < s.centre_pos_radius <= s.centre_neg_radius:
        problems.append('sampler needs 0 < centre_pos_radius <= centre_neg_radius')
    if not 0 <= s.anchor_neg_iou <= s.anchor_pos_iou < 1:
        problems.append('sampler needs 0 <= anchor_neg_iou <= anchor_pos_iou < 1')
    if min(cfg.loss.cls_weight, cfg.loss.reg_weight, cfg.loss.loc_weight) < 0:
        problems.append('loss.cls_weight, reg_weight and loc_weight must be >= 0')
    if (cfg.optim.lr <= 0 or cfg.optim.module_lr_scale <= 0 or cfg.optim.warmup_steps < 0
            or cfg.optim.grad_clip < 0):
        problems.append('optim.lr and module_lr_scale must be > 0, warmup_steps and '
                        'grad_clip >= 0')
    d = cfg.data
    if d.unique_pairs < 0 or d.num_workers < 0 or d.frame_cache < 0:
        problems.append('data.unique_pairs, num_workers and frame_cache must be >= 0')
    for i, src in enumerate(d.sources):
        if src.kind not in DATA_KINDS:
            problems.append(f'data.sources[{i}].kind must be one of {", ".join(DATA_KINDS)}')
        if not src.root:
            problems.append(f'data.sources[{i}].root is empty: name the data folder')
        if src.weight <= 0 or src.max_frames < 0:
            problems.append(f'data.sources[{i}]: weight must be > 0 and max_frames >= 0')
    if cfg.val.every < 0 or cfg.val.max_frames < 0:
        problems.append('val.every and val.max_frames must be >= 0')
    from ..core.config import PRESETS
    if cfg.val.preset not in PRESETS:
        problems.append(f'val.preset must be one of {", ".join(sorted(PRESETS))}')
    if problems:
        raise ConfigError('invalid training configuration: ' + '; '.join(problems))
    return cfg


def from_mapping(values: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from a (YAML-like) nested mapping."""
    return validate(_build(TrainConfig, values or {}, ''))


def set_value(values: Dict[str, Any], assignment: str) -> Dict[str, Any]:
    """
    Apply one ``section.key=value`` override to a nested mapping (in place; returned).

    The value is parsed as YAML (``3``, ``0.5``, ``true``, ``[a, b]``).
    """
    key, sep, text = assignment.partition('=')
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f'override {assignment!r} must be written key=value, e.g. '
                          'optim.lr=0.001')
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f'override {assignment!r}: the value is not YAML ({exc})') from None
    node = values
    parts = key.split('.')
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f'override {assignment!r}: {part} is not a section')
        node = child
    node[parts[-1]] = value
    return values


def load_config(path: Union[str, Path, None] = None,
                overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply overrides."""
    values: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f'training config {path} does not exist')
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path} is not valid YAML: {exc}') from None
        if not isinstance(values, dict):
            raise ConfigError(f'{path} must hold a mapping of settings')
    for assignment in overrides:
        set_value(values, assignment)
    return from_mapping(values)


def to_mapping(cfg: Any) -> Any:
    """Return a plain nested dict/list copy of a config (for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_mapping(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_mapping(v) for v in cfg]
    return cfg
