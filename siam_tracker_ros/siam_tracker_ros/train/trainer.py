"""
The siam-train loop: start from a model's weights, fit on pairs, validate with the real tracker.

One run writes into its output folder:

* ``config.yaml``: the configuration in force;
* ``train_log.csv``: per step the learning rate, the total loss and every loss term (the
  weighted base terms ``cls`` and ``reg`` and each learned module's extra term) and the
  step's wall time; ``val_log.csv``: per validation the mean AUC and each sequence's AUC;
* ``tensorboard/``: the same scalars, when ``torch.utils.tensorboard`` imports;
* ``checkpoints/step_NNNNNNN.pt``: resumable state (model, optimiser, AMP scaler, step, RNG
  states, configuration);
* ``model.pth``: the base network's state dict (``{'state_dict': ...}``, which
  ``nets.registry.load_weights`` reads strictly into ``build_net(arch)``; a SiamRPN++ net keeps
  pysot's parameter names, so ``siam-model import pysot --config CONFIG --checkpoint
  model.pth`` takes it) and ``modules.pth``: the learned modules' settings and state dict;
* ``learning_curves.png``: the smoothed training loss and the validation AUC (train/curves.py;
  ``siam-train --curves OUT.png --run LABEL=DIR ...`` overlays several runs).

Validation saves the current base weights and the state of the learned modules that run at
inference (all but the margin loss and adversarial dropout: ``nets.modules_file``) to ``val/``
as the torch backend reads a model exported with ``siam-model export --modules`` (checkpoint +
modules.pth, no ONNX), and
runs the tracker (core/tracker.py on that backend, exactly as siam-eval runs such a model) over
the first ``val.max_frames`` frames of each held-out sequence, scoring AUC with
eval/metrics.py. TAFA runs on every frame; the ST fusion runs only when ``val.preset`` updates
the template (``update`` or a long-term preset, not ``plain``). The modules without an export
(DA attention, feature modulation, layer aggregation) are not in the tracker: validation
measures the net without them.

The base is NanoTrack (v1, v2, v3: point labels, IoU loss, the learned modules) or SiamRPN++
(siamrpn_alex, siamrpn_mobilev2, siamrpn_r50, from a pysot checkpoint or a product model
folder: pysot's anchor labels and losses, ``nets.train_net.RPNTrainNet``; the learned modules
are NanoTrack only and refused). ``freeze_backbone`` freezes the backbone; SiamRPN++'s neck
(AdjustAllLayer) trains with its head, NanoTrack's neck is never run and stays frozen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import random
import sys
import time
from typing import Any, Dict, List, Optional, Sequence as Seq, TextIO, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import yaml

from .config import ConfigError, to_mapping, TrainConfig
from .datasets import load_source
from .loader import make_loader, PairDataset
from .losses import anchor_losses, base_losses
from .pairs import FrameCache, Geometry, PairSampler
from ..core.config import preset, TrackerConfig
from ..core.manifest import (AnchorSpec, load_manifest, MANIFEST_NAME, ModelError, ModelSpec,
                             MODULES_ROLE)
from ..io.sequences import load_frames, load_sequence, Sequence
from ..nets.modules_file import LearnedFile, MODULES_FILE, runtime_part, save_modules
from ..nets.siamrpn import SiamRPNpp
from ..nets.train_net import modules_on, RPNTrainNet, TrainNet

CHECKPOINT_FORMAT = 'siam-train-checkpoint'
CHECKPOINT_VERSION = 1
LOG_NAME = 'train_log.csv'
VAL_LOG_NAME = 'val_log.csv'
CURVES_NAME = 'learning_curves.png'
WEIGHTS_NAME = 'model.pth'
MODULES_NAME = 'modules.pth'
NANOTRACK_ARCHS = ('nanotrack_v1', 'nanotrack_v2', 'nanotrack_v3')
SIAMRPN_ARCHS = ('siamrpn_alex', 'siamrpn_mobilev2', 'siamrpn_r50')
PathLike = Union[str, Path]
AnyTrainNet = Union[TrainNet, RPNTrainNet]


@dataclass(frozen=True)
class BaseModel:
    """The network a run starts from: architecture, checkpoint and tracker settings."""

    arch: str
    checkpoint: Path
    tracker: TrackerConfig
    name: str


def resolve_base(model: str, arch: str = '') -> BaseModel:
    """
    Find the starting weights: a product model folder, an upstream NanoTrack folder or a .pth.

    A bare .pth (a NanoTrack or pysot SiamRPN++ checkpoint) needs ``arch``; it gets the
    tracker settings of that arch (for SiamRPN++ those of pysot's published config).
    NanoTrack (v1, v2, v3) and SiamRPN++ (siamrpn_alex, siamrpn_mobilev2, siamrpn_r50) nets
    can be trained.
    """
    if not model:
        raise ConfigError('model is empty: give a model folder (e.g. '
                          '../shared/reference-models/nanotrack-v3) or a .pth with arch')
    path = Path(model).expanduser()
    tracker = TrackerConfig()
    if path.is_file():
        checkpoint = path
        if not arch:
            raise ConfigError(f'{path} is a bare checkpoint: set arch (one of '
                              f'{", ".join(NANOTRACK_ARCHS + SIAMRPN_ARCHS)})')
        if arch in SIAMRPN_ARCHS:
            from ..nets.pysot_import import tracker_config
            from ..nets.siamrpn import DEFAULT_CONFIGS
            tracker = tracker_config(DEFAULT_CONFIGS[arch])
    elif (path / MANIFEST_NAME).is_file():
        spec = load_manifest(path)
        arch = arch or spec.arch
        checkpoint = spec.path('checkpoint')
        tracker = spec.tracker
    else:
        from ..nets.nanotrack_import import (find_upstream_files, read_tracker_config,
                                             upstream_version)
        files = find_upstream_files(path)
        if files is None:
            raise ConfigError(f'model {path} is neither a model folder ({MANIFEST_NAME}), an '
                              'upstream NanoTrack folder nor a .pth file')
        if 'checkpoint' not in files:
            raise ConfigError(f'upstream folder {path} has no nanotrackvN.pth checkpoint to '
                              'start from')
        arch = arch or f'nanotrack_v{upstream_version(files)}'
        checkpoint = files['checkpoint']
        tracker = read_tracker_config(files['config'])
    if arch not in NANOTRACK_ARCHS + SIAMRPN_ARCHS:
        raise ConfigError(f'siam-train trains NanoTrack ({", ".join(NANOTRACK_ARCHS)}) and '
                          f'SiamRPN++ ({", ".join(SIAMRPN_ARCHS)}); {arch or "this model"} '
                          'is not one of them')
    return BaseModel(arch=arch, checkpoint=checkpoint, tracker=tracker, name=path.stem)


def learned_state(net: AnyTrainNet) -> Dict[str, torch.Tensor]:
    """Return the state of ``net`` outside its base network (the learned modules)."""
    prefix = next(name for name, child in net.named_children() if child is net.base) + '.'
    return {k: v.detach().cpu() for k, v in net.state_dict().items()
            if not k.startswith(prefix)}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) step ``step``: linear warm-up, then cosine or constant."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == 'constant':
        return o.lr
    span = max(cfg.steps - o.warmup_steps, 1)
    t = min(max(step - o.warmup_steps, 0) / span, 1.0)
    low = o.lr * o.min_lr_ratio
    return low + 0.5 * (o.lr - low) * (1.0 + math.cos(math.pi * t))


class ProgressLine:
    """Progress on stderr: tqdm when installed, else one redrawn line (or periodic lines)."""

    def __init__(self, total: int, start: int, stream: Optional[TextIO], every: int,
                 enabled: bool = True):
        """Report steps start+1 .. total; without a TTY, a line every ``every`` steps."""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.total = total
        self.every = max(every, 1)
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, initial=start, file=self.stream,
                                 dynamic_ncols=True, desc='siam-train')
        isatty = getattr(self.stream, 'isatty', None)
        self.interactive = bool(isatty and isatty())

    def step(self, step: int, row: Dict[str, float]) -> None:
        """Step ``step`` (1-based) finished with the logged ``row``."""
        if not self.enabled:
            return
        terms = ' '.join(f'{k} {v:.4f}' for k, v in row.items()
                         if k not in ('step', 'lr', 'seconds'))
        if self._bar is not None:
            self._bar.set_postfix_str(terms, refresh=False)
            self._bar.update(1)
            return
        text = (f'step {step}/{self.total} {terms} lr {row["lr"]:.2e} '
                f'{row["seconds"]:.2f} s/step')
        if self.interactive:
            self.stream.write('\r' + text + '\x1b[K')
            if step == self.total:
                self.stream.write('\n')
        elif step % self.every == 0 or step == self.total:
            self.stream.write(text + '\n')
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
            return
        self.stream.write(('\r\x1b[K' if self.interactive else '') + text + '\n')
        self.stream.flush()

    def close(self) -> None:
        """Finish the display."""
        if self._bar is not None:
            self._bar.close()


class CsvLog:
    """A CSV file with a fixed header; on resume, rows after the resume step are dropped."""

    def __init__(self, path: Path, resume_step: Optional[int] = None):
        """Start ``path`` afresh, or keep its rows up to ``resume_step``."""
        self.path = path
        self.header: Optional[List[str]] = None
        kept: List[str] = []
        if resume_step is not None and path.is_file():
            lines = path.read_text().splitlines()
            if lines:
                self.header = lines[0].split(',')
                kept = [ln for ln in lines[1:] if ln and int(ln.split(',')[0]) <= resume_step]
        with open(path, 'w') as f:
            if self.header:
                f.write(','.join(self.header) + '\n' + ''.join(ln + '\n' for ln in kept))

    def write(self, row: Dict[str, Any]) -> None:
        """Append a row (the first row fixes the columns)."""
        if self.header is None:
            self.header = list(row)
            with open(self.path, 'a') as f:
                f.write(','.join(self.header) + '\n')
        if list(row) != self.header:
            raise RuntimeError(f'{self.path.name}: columns changed from {self.header} to '
                               f'{list(row)}')
        with open(self.path, 'a') as f:
            f.write(','.join(_cell(v) for v in row.values()) + '\n')


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _tensorboard(log_dir: Path, purge_step: Optional[int]):
    """Return a SummaryWriter, or None where torch.utils.tensorboard does not import."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class Validator:
    """Runs the real tracker (torch backend) on held-out sequences and scores AUC."""

    def __init__(self, cfg: TrainConfig, base: BaseModel, out_dir: Path):
        """Load the validation sequences (first ``val.max_frames`` frames of each)."""
        self.cfg = cfg
        self.base = base
        self.folder = out_dir / 'val'
        self.sequences: List[Sequence] = []
        cap = cfg.val.max_frames
        for path in cfg.val.sequences:
            seq = load_sequence(path)
            if cap:
                seq = Sequence(name=seq.name, frames=seq.frames[:cap], gt=seq.gt[:cap])
            self.sequences.append(seq)
        self.tracker_config = base.tracker.replace(**preset(cfg.val.preset))

    def __bool__(self) -> bool:
        """Tell whether there is anything to validate on."""
        return bool(self.sequences)

    def model(self, net: AnyTrainNet) -> ModelSpec:
        """
        Write ``net``'s current weights to the validation folder; return the spec to track with.

        The spec is what the torch backend needs of an exported model: the base checkpoint
        and, when a module that runs at inference is on, modules.pth (with the fusion memory
        size and the temporal frames a model folder's manifest would record).
        """
        from ..nets.module_export import FRAMES
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / 'weights.pth'
        torch.save({'state_dict': {k: v.detach().cpu() for k, v in
                                   net.base.state_dict().items()}}, weights)
        files = {'checkpoint': weights.name}
        learned = runtime_part(LearnedFile(net.config, learned_state(net), self.base.arch))
        if learned.runtime:
            save_modules(learned, self.folder / MODULES_FILE)
            files[MODULES_ROLE] = MODULES_FILE
        c = learned.config
        anchors = _anchors(net.base)
        return ModelSpec(root=self.folder, name='siam-train-val',
                         family='nanotrack' if anchors is None else 'siamrpn',
                         decoder='anchor_free' if anchors is None else 'anchor',
                         layout='template_search', stride=int(net.base.stride), files=files,
                         arch=self.base.arch, tracker=self.tracker_config, anchors=anchors,
                         fusion_memory=c.st_memory if c.st_fusion else 0,
                         temporal_frames=FRAMES if c.tafa else 0)

    def run(self, net: AnyTrainNet) -> Dict[str, float]:
        """Return each sequence's AUC and their mean ('auc') for the current weights."""
        from ..backends.registry import create_backend
        from ..core.tracker import SiameseTracker
        from ..eval.metrics import evaluate_sequence
        from ..eval.runner import run_tracker
        spec = self.model(net)
        backend = create_backend('torch', spec, device=self.cfg.device)
        out: Dict[str, float] = {}
        for seq in self.sequences:
            tracker = SiameseTracker(spec, backend, self.tracker_config)
            run = run_tracker(tracker, load_frames(seq), seq, 'val')
            out[seq.name] = float(evaluate_sequence(run.boxes, seq.gt).auc)
        return {'auc': float(np.mean(list(out.values()))), **out}


@dataclass(frozen=True)
class TrainResult:
    """What a run did: its folder, last step, logged rows and files."""

    out_dir: Path
    step: int
    losses: List[Dict[str, float]]
    val: List[Dict[str, float]]
    weights: Path
    modules: Path
    checkpoint: Optional[Path]
    seconds_per_step: float
    notes: Tuple[str, ...] = field(default=())


def build_data(cfg: TrainConfig, geometry: Geometry,
               exclude: Seq[Sequence] = ()) -> PairSampler:
    """Return the pair sampler over every configured source (sources share pairs by weight)."""
    if not cfg.data.sources:
        raise ConfigError('data.sources is empty: list at least one data set to train on')
    held_out = {seq.frames[0].parent.resolve() for seq in exclude if seq.frames}
    sequences, weights = [], []
    for source in cfg.data.sources:
        try:
            seqs = load_source(source)
        except ValueError as exc:
            raise ConfigError(f'data source {source.kind} {source.root}: {exc}') from exc
        for seq in seqs:
            if seq.frames and seq.frames[0].parent.resolve() in held_out:
                raise ConfigError(f'sequence {seq.name} is both a training and a validation '
                                  'sequence; hold it out of data.sources or val.sequences')
        sequences += seqs
        weights += [source.weight / len(seqs)] * len(seqs)
    return PairSampler(sequences, cfg.sampler, geometry, history=cfg.history,
                       frames=cfg.frames, weights=weights,
                       cache=FrameCache(cfg.data.frame_cache))


def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                      'pos': int(np_state[2]), 'has_gauss': int(np_state[3]),
                      'cached_gaussian': float(np_state[4])},
            'python': [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'],
                         n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate((p[0], tuple(p[1]), p[2]))


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    """Return the checkpoint with the highest step in ``out_dir/checkpoints`` (None if none)."""
    found = sorted((out_dir / 'checkpoints').glob('step_*.pt'))
    return found[-1] if found else None


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a siam-train checkpoint (``weights_only``); raise ConfigError if it is not one."""
    if not path.is_file():
        raise ConfigError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ConfigError(f'cannot read checkpoint {path}: {exc}') from exc
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise ConfigError(f'{path} is not a siam-train checkpoint (model weights start a run '
                          'through the model setting instead)')
    return state


def _device(cfg: TrainConfig) -> torch.device:
    name = cfg.device.strip().lower()
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f'device {cfg.device!r} asked for, but this torch '
                          f'({torch.__version__}) sees no CUDA device; use device: cpu')
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f'device {cfg.device!r} is not a torch device: use cpu, cuda or '
                          'cuda:N') from exc


def check_siamrpn_config(cfg: TrainConfig, arch: str) -> None:
    """Refuse the settings a SiamRPN++ run cannot honour (the NanoTrack-only parts)."""
    on = modules_on(cfg.modules)
    if on:
        raise ConfigError(f'the learned modules are NanoTrack only: {arch} (SiamRPN++) trains '
                          f'without them; switch off {", ".join("modules." + n for n in on)}')
    if cfg.sampler.label_assignment != 'ellipse':
        raise ConfigError(f'sampler.label_assignment {cfg.sampler.label_assignment} labels '
                          f'points of an anchor-free head (NanoTrack only); {arch} uses '
                          "pysot's IoU anchor labels (sampler.anchor_pos_iou, anchor_neg_iou)")


def _anchors(base: nn.Module) -> Optional[AnchorSpec]:
    """Return the anchor set of an anchor head (SiamRPN++), None for a point head."""
    if not isinstance(base, SiamRPNpp):
        return None
    return AnchorSpec(tuple(base.config.ratios), tuple(base.config.scales))


def _set_train_mode(net: AnyTrainNet, cfg: TrainConfig) -> None:
    net.train()
    if cfg.freeze_backbone:
        net.base.backbone.eval()
    if cfg.freeze_head:
        for name, module in net.base.named_children():
            if name != 'backbone':
                module.eval()
    if cfg.freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train(cfg: TrainConfig, out_dir: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, progress: bool = True,
          stream: Optional[TextIO] = None, overwrite: bool = False) -> TrainResult:
    """
    Run (or resume) a training run; return what it did.

    ``out_dir`` defaults to ``cfg.out_dir``. ``resume`` is a checkpoint path or 'auto' (the
    latest one in ``out_dir``). A folder that already holds a run is refused unless resuming
    or ``overwrite``.
    """
    from ..nets.registry import build_net, load_weights
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    state = None
    if resume is not None:
        path = latest_checkpoint(out) if str(resume) == 'auto' else Path(resume)
        if path is None:
            raise ConfigError(f'--resume auto: no checkpoint in {out / "checkpoints"}')
        state = read_checkpoint(path)
    elif (out / LOG_NAME).is_file() and not overwrite:
        raise ConfigError(f'{out} already holds a training run; resume it (--resume auto), '
                          'choose another output folder or overwrite it (--overwrite)')
    out.mkdir(parents=True, exist_ok=True)
    if state is None:                      # a fresh run: no stale checkpoint to resume from
        for old in (out / 'checkpoints').glob('step_*.pt'):
            old.unlink()
    device = _device(cfg)
    amp = bool(cfg.amp and device.type == 'cuda')      # on the CPU: float32
    notes: List[str] = []
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2 ** 32)
    random.seed(cfg.seed)

    base_model = resolve_base(cfg.model, cfg.arch)
    anchor_head = base_model.arch in SIAMRPN_ARCHS
    if anchor_head:
        check_siamrpn_config(cfg, base_model.arch)
    try:
        if anchor_head:
            from ..nets.pysot_import import load_pysot_weights
            base = build_net(base_model.arch)
            load_pysot_weights(base, base_model.checkpoint)   # pysot's layouts, strict
        else:
            base = load_weights(build_net(base_model.arch), base_model.checkpoint, strict=True)
    except ModelError as exc:
        raise ConfigError(f'cannot start from {cfg.model}: {exc}') from exc
    net = (RPNTrainNet if anchor_head else TrainNet)(base, cfg.modules).to(device)
    frozen = [base.backbone] if cfg.freeze_backbone else []
    frozen += [m for name, m in base.named_children() if name != 'backbone' and (
        cfg.freeze_head or (name == 'neck' and not anchor_head))]
    for module in frozen:                   # NanoTrack's neck is never run
        for p in module.parameters():
            p.requires_grad_(False)
    base_ids = {id(p) for p in base.parameters()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups = [{'params': [p for p in trainable if id(p) in base_ids], 'lr_scale': 1.0},
              {'params': [p for p in trainable if id(p) not in base_ids],
               'lr_scale': cfg.optim.module_lr_scale}]
    groups = [g for g in groups if g['params']]
    if not groups:
        raise ConfigError('nothing to train: freeze_head with no learned module that has '
                          'parameters (switch one on under modules:)')
    o = cfg.optim
    if o.optimizer == 'adamw':
        optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                                    weight_decay=o.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start = 0
    if state is not None:
        if state['arch'] != base_model.arch or state['modules'] != to_mapping(cfg.modules):
            raise ConfigError('the checkpoint was trained with another network or other '
                              f'modules ({state["arch"]}, {state["modules"]}); resume with '
                              'the configuration it was made with')
        net.load_state_dict(state['model'], strict=True)
        optimizer.load_state_dict(state['optimizer'])
        scaler.load_state_dict(state['scaler'])
        start = int(state['step'])
        _set_rng_state(state['rng'])
    if start >= cfg.steps:
        raise ConfigError(f'the checkpoint is at step {start}; set steps above it to train on')

    validator = Validator(cfg, base_model, out)
    if validator and cfg.modules.st_fusion and not validator.tracker_config.update.interval:
        notes.append(f'val.preset {cfg.val.preset} never updates the template, so validation '
                     'does not run the ST fusion (val.preset=update does)')
    tc = base_model.tracker.step
    geometry = Geometry(tc.exemplar_size, tc.instance_size, base.score_size, base.stride,
                        tc.context_amount, anchors=_anchors(base))
    sampler = build_data(cfg, geometry, exclude=validator.sequences)
    if sampler.dropped:
        notes.append(f'no visible target in {", ".join(sampler.dropped)}: not used')
    dataset = PairDataset(sampler, cfg.seed, cfg.data.unique_pairs)
    loader = make_loader(dataset, cfg.batch_size, start, cfg.steps, cfg.data.num_workers,
                         pin_memory=device.type == 'cuda')
    (out / 'config.yaml').write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    resumed = start if state is not None else None
    log = CsvLog(out / LOG_NAME, resumed)
    val_log = CsvLog(out / VAL_LOG_NAME, resumed)
    writer = _tensorboard(out / 'tensorboard', resumed + 1 if resumed is not None else None) \
        if cfg.tensorboard else None
    if cfg.tensorboard and writer is None:
        notes.append('torch.utils.tensorboard does not import (pip install tensorboard): '
                     'no TensorBoard logs')
    bar = ProgressLine(cfg.steps, start, stream, cfg.log_every, progress)
    for note in notes:
        bar.message(f'siam-train: {note}')

    val_rows: List[Dict[str, float]] = []

    def validate(step: int) -> None:
        scores = validator.run(net)
        row = {'step': step, **scores}
        val_log.write(row)
        val_rows.append(row)
        if writer is not None:
            for k, v in scores.items():
                writer.add_scalar('val/' + k, v, step)
        bar.message(f'step {step}: validation AUC {scores["auc"]:.3f} ('
                    + ', '.join(f'{k} {v:.3f}' for k, v in scores.items() if k != 'auc')
                    + ')')

    def save_checkpoint(step: int) -> Path:
        folder = out / 'checkpoints'
        folder.mkdir(exist_ok=True)
        path = folder / f'step_{step:07d}.pt'
        torch.save({'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION, 'step': step,
                    'arch': base_model.arch, 'modules': to_mapping(cfg.modules),
                    'config': to_mapping(cfg), 'model': net.state_dict(),
                    'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                    'rng': _rng_state()}, path)
        return path

    if validator and cfg.val.at_start and state is None:
        validate(0)
    rows: List[Dict[str, float]] = []
    checkpoint = None
    step = start
    _set_train_mode(net, cfg)
    tick = time.perf_counter()
    for batch in loader:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr * group['lr_scale']
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            outputs = net(batch['templates'], batch['searches'])
            terms = (anchor_losses if anchor_head else base_losses)(outputs, batch, cfg.loss)
            extra = net.extra_losses(outputs, batch)
        clash = set(extra) & (set(terms) | {'loss', 'step', 'lr', 'seconds'})
        if clash:
            raise RuntimeError(f'extra loss names {sorted(clash)} clash with the log columns')
        terms.update(extra)
        loss = sum(t.float() for t in terms.values())
        if not torch.isfinite(loss):
            raise RuntimeError(f'loss is {loss.item()} at step {step + 1} ('
                               + ', '.join(f'{k} {v.item():.4g}' for k, v in terms.items())
                               + '); lower optim.lr or check the data')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if o.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, o.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        now = time.perf_counter()
        row = {'step': step, 'lr': lr, 'loss': float(loss.item()),
               **{k: float(v.item()) for k, v in terms.items()}, 'seconds': now - tick}
        tick = now
        log.write(row)
        rows.append(row)
        if writer is not None:
            writer.add_scalar('lr', lr, step)
            for k in row:
                if k not in ('step', 'lr', 'seconds'):
                    writer.add_scalar('loss/' + k, row[k], step)
        bar.step(step, row)
        last = step == cfg.steps
        if validator and ((cfg.val.every and step % cfg.val.every == 0) or last):
            validate(step)
            _set_train_mode(net, cfg)
        if last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            checkpoint = save_checkpoint(step)
        tick = time.perf_counter()          # a step's time: waiting for its batch + compute
    bar.close()
    if writer is not None:
        writer.close()
    weights, modules = out / WEIGHTS_NAME, out / MODULES_NAME
    torch.save({'state_dict': {k: v.detach().cpu() for k, v in net.base.state_dict().items()},
                'arch': base_model.arch, 'step': step}, weights)
    torch.save({'modules': to_mapping(cfg.modules), 'state_dict': learned_state(net),
                'arch': base_model.arch, 'step': step}, modules)
    try:
        from .curves import write_learning_curves
        write_learning_curves({out.name: out}, out / CURVES_NAME)
    except ImportError:
        notes.append(f'matplotlib is not installed: no {CURVES_NAME}')
    times = [r['seconds'] for r in rows[1:]] or [r['seconds'] for r in rows]
    return TrainResult(out_dir=out, step=step, losses=rows, val=val_rows, weights=weights,
                       modules=modules, checkpoint=checkpoint,
                       seconds_per_step=float(np.median(times)) if times else float('nan'),
                       notes=tuple(notes))
