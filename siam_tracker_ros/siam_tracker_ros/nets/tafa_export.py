"""
A NanoTrack model fine-tuned with TAFA's temporal shift: its search graph, export and check.

``siam-train ... --set modules.tafa=true`` writes ``model.pth`` (the base NanoTrack weights) and
``modules.pth`` (``{'modules': LearnedModules fields, 'state_dict': the modules' state}``).
The shift (``nets.modules.tafa.TemporalShift``) sits on the search side, so only the search
graph changes (the template graph is the base one):

* inputs ``search`` (1, 3, 255, 255), ``zf`` (the template features) and ``xf_prev1``,
  ``xf_prev2`` (1, C, 16, 16): the un-shifted backbone features of the search crops of frames
  t-1 and t-2;
* outputs ``cls``, ``reg`` and ``xf``: frame t's un-shifted backbone features, which the tracker
  hands back as ``xf_prev1`` on the next frame (and ``xf_prev2`` on the one after).

The graph gains Slice, Concat, a constant-weight 1x1 Conv, Mul and Add: no Conv with run-time
weights. The manifest records ``temporal_frames: 2``; the folder also holds ``modules.pth``
(role 'modules') so the torch backend runs the same module. Where a neighbour does not exist
yet, the nearest available frame stands in, down to frame t itself (``TemporalShift``'s rule);
the backends apply it (``backends.base.neighbour_features``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
import shutil
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import onnx
import torch
import torch.nn as nn

from .export import (CHECKPOINT_FILE, export_onnx, ExportError, fold_constants,
                     nanotrack_tracker_config, SEARCH_FILE, TEMPLATE_FILE, write_model_dir)
from .nanotrack import NanoTrack
from .onnx_inspect import runtime_weight_convs
from .registry import _numpy_safe_globals, build_net, load_weights
from .train_net import LearnedModules, TrainNet
from ..core.manifest import (load_manifest, ModelError, ModelSpec, temporal_inputs,
                             TEMPORAL_OUTPUT, write_manifest)

PathLike = Union[str, Path]

MODULES_FILE = 'modules.pth'
FRAMES = 2                      # TAFA's neighbours: t-1 and t-2
PREVIOUS_INPUTS = temporal_inputs(FRAMES)
# As the split export's checks: template / backbone features and the head's outputs, each
# relative to the largest torch value.
FEATURE_TOL = 2e-4
OUTPUT_TOL = 1e-3
# Modules that would change the exported graphs in ways this export does not implement.
_UNSUPPORTED = ('st_fusion', 'da_attention', 'feature_modulation', 'layer_aggregation')


def read_learned(path: PathLike) -> Tuple[LearnedModules, Dict[str, torch.Tensor], str]:
    """
    Read a ``modules.pth`` written by siam-train: (settings, module state, base arch).

    Raises ModelError saying what is wrong when the file is missing, unreadable or not such a
    file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'learned-modules file {path} does not exist (siam-train writes '
                         'modules.pth beside model.pth)')
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ModelError(f'cannot read learned-modules file {path}: {exc}; the file may be '
                         'corrupt: copy modules.pth from the siam-train run again') from exc
    if not (isinstance(obj, Mapping) and isinstance(obj.get('modules'), Mapping)
            and isinstance(obj.get('state_dict'), Mapping)):
        raise ModelError(f'{path} is not a siam-train modules.pth (a dict with "modules" '
                         'settings and a "state_dict")')
    try:
        modules = LearnedModules(**dict(obj['modules']))
    except (TypeError, ValueError) as exc:
        raise ModelError(f'{path}: bad learned-module settings: {exc}') from exc
    return modules, dict(obj['state_dict']), str(obj.get('arch', ''))


def build_tafa_net(arch: str, checkpoint: PathLike, modules_path: PathLike) -> TrainNet:
    """
    Return the eval-mode ``TrainNet`` of base ``checkpoint`` plus the TAFA shift of a modules.pth.

    Only TAFA may change the graphs: settings with other graph-changing modules on (ST fusion,
    DA attention, feature modulation, layer aggregation) and settings without TAFA are
    refused with a ModelError (the margin and adversarial-dropout terms are training-only).
    """
    modules, state, trained_arch = read_learned(modules_path)
    if trained_arch and arch and trained_arch != arch:
        raise ModelError(f'{modules_path} was trained on {trained_arch}, not {arch}')
    if not modules.tafa:
        raise ModelError(f'{modules_path} has no TAFA module (modules.tafa is false); export '
                         'the base weights without it')
    others = [name for name in _UNSUPPORTED if getattr(modules, name)]
    if others:
        raise ModelError(f'{modules_path} also has {", ".join(others)}, which this export '
                         'cannot put into the graphs yet; train with modules.tafa alone')
    base = load_weights(build_net(arch), checkpoint, strict=True)
    if not isinstance(base, NanoTrack):
        raise ModelError(f'TAFA export needs a NanoTrack net, not {arch}')
    net = TrainNet(base, modules)
    own = {k: v for k, v in net.state_dict().items() if not k.startswith('base.')}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ModelError(f'{modules_path} does not match the TAFA module of {arch}: missing '
                         f'{missing[:6]}, unexpected {unexpected[:6]}, other shapes '
                         f'{wrong[:6]}')
    net.load_state_dict(state, strict=False)
    return net.eval()


class TafaSearch(nn.Module):
    """Search side of a TAFA ``TrainNet``: (search, zf, *previous) -> (cls, reg, xf)."""

    def __init__(self, net: TrainNet):
        super().__init__()
        if net.tafa is None:
            raise ValueError('TafaSearch needs a TrainNet with the TAFA module on')
        self.net = net
        # torch.onnx.export restores the exported module's mode, and with it the net's: a
        # wrapper left in training mode would leave the shared net's BatchNorm training.
        self.train(net.training)

    def forward(self, search: torch.Tensor, zf: torch.Tensor,
                *previous: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Score a search crop with the features of earlier frames, t-1 first.

        With none, frame t stands in for its neighbours (``TemporalShift(xf, None)``); with
        one, it stands in for t-2 as well.
        """
        xf = self.net.features(search)
        history = torch.stack(previous[::-1], dim=1) if previous else None  # oldest first
        cls, reg = self.net.base.ban_head(zf, self.net.tafa(xf, history))
        return cls, reg, xf


def example_inputs(net: TrainNet, instance_size: int = 255, exemplar_size: int = 127,
                   seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """(search, zf, xf_prev1, xf_prev2) from random crops: real backbone features."""
    if net.training:
        raise ValueError('example_inputs needs the net in eval mode (BatchNorm would train)')
    gen = torch.Generator().manual_seed(seed)
    crops = torch.rand(FRAMES + 1, 3, instance_size, instance_size, generator=gen) * 255.0
    z = torch.rand(1, 3, exemplar_size, exemplar_size, generator=gen) * 255.0
    with torch.no_grad():
        zf = net.features(z)
        feats = net.features(crops[1:])
    return (crops[:1], zf) + tuple(feats[i:i + 1] for i in range(FRAMES))


def export_tafa_search(net: TrainNet, path: PathLike, instance_size: int = 255,
                       exemplar_size: int = 127, opset: int = 17, check: bool = True) -> Path:
    """
    Export the temporal search graph of ``net`` to ``path`` (static shapes).

    With ``check`` the graph is validated with ``onnx.checker`` and an ``ExportError`` is
    raised when a Conv would take run-time weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.eval()
    args = example_inputs(net, instance_size, exemplar_size)
    with torch.no_grad():
        export_onnx(TafaSearch(net), args, path, ['search', 'zf', *PREVIOUS_INPUTS],
                    ['cls', 'reg', TEMPORAL_OUTPUT], opset)
    model = onnx.load(str(path))
    if fold_constants(model):
        onnx.save(model, str(path))
    if check:
        onnx.checker.check_model(str(path))
        bad = runtime_weight_convs(path)
        if bad:
            raise ExportError(f'{path}: Conv nodes with run-time weights {bad}; TensorRT cannot '
                              'parse them')
    return path


def check_tafa_search(net: TrainNet, path: PathLike, seed: int = 1) -> Dict[str, float]:
    """
    Run the exported search graph in ONNX Runtime (CPU) against ``net`` in torch.

    Inputs are real backbone features of random crops (``seed``). Returns the max abs
    difference per output; raises ``ExportError`` when one exceeds its tolerance (FEATURE_TOL
    for xf, OUTPUT_TOL for cls and reg, relative to the largest torch value).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=['CPUExecutionProvider'])
    net.eval()
    size = session.get_inputs()[0].shape[-1]
    args = example_inputs(net, int(size), seed=seed)
    with torch.no_grad():
        ref = [t.numpy() for t in TafaSearch(net)(*args)]
    names = ['search', 'zf', *PREVIOUS_INPUTS]
    got = session.run(['cls', 'reg', TEMPORAL_OUTPUT],
                      {n: a.numpy() for n, a in zip(names, args)})
    errors = {}
    for name, g, r, tol in zip(('cls', 'reg', 'xf'), got, ref,
                               (OUTPUT_TOL, OUTPUT_TOL, FEATURE_TOL)):
        if g.shape != r.shape:
            raise ExportError(f'{path}: output {name} shape {g.shape} != torch {r.shape}')
        err = float(np.abs(g - r).max())
        peak = float(np.abs(r).max())
        if err > tol * peak:
            raise ExportError(f'{path}: ONNX Runtime {name} differs from torch by {err:.3g} > '
                              f'{tol} * peak {peak:.3g}')
        errors[name] = err
    return errors


def export_nanotrack_tafa(version: int, checkpoint: PathLike, modules_path: PathLike,
                          out_dir: PathLike, opset: int = 17, name: Optional[str] = None,
                          verify: bool = True) -> ModelSpec:
    """
    Write a model directory for NanoTrack v``version`` fine-tuned with TAFA.

    ``out_dir`` receives template.onnx (the base template encoder), search.onnx (the temporal
    search graph), checkpoint.pth (the base weights), modules.pth (the learned state) and a
    manifest with ``temporal_frames: 2``. With ``verify`` the search graph is checked against
    torch in ONNX Runtime (``check_tafa_search``). Returns the verified ModelSpec.
    """
    arch = f'nanotrack_v{version}'
    tracker = nanotrack_tracker_config(version)
    net = build_tafa_net(arch, checkpoint, modules_path)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    step = tracker.step
    tpath = export_template(net.base, root / TEMPLATE_FILE, step.exemplar_size, opset)
    spath = export_tafa_search(net, root / SEARCH_FILE, step.instance_size, step.exemplar_size,
                               opset=opset)
    if verify:
        check_tafa_search(net, spath)
    ckpt = root / CHECKPOINT_FILE
    torch.save({'arch': arch, 'state_dict': net.base.state_dict()}, ckpt)
    if Path(modules_path).resolve() != (root / MODULES_FILE).resolve():
        shutil.copyfile(modules_path, root / MODULES_FILE)
    spec = write_model_dir(root, name=name or f'{arch}-tafa', family='nanotrack', arch=arch,
                           decoder='anchor_free', stride=16, tracker=tracker,
                           template_onnx=tpath, search_onnx=spath, checkpoint=ckpt)
    write_manifest(replace(spec, files={**spec.files, 'modules': MODULES_FILE},
                           temporal_frames=FRAMES))
    return load_manifest(root)


def export_template(net: NanoTrack, path: Path, exemplar_size: int, opset: int = 17) -> Path:
    """Export the base template encoder alone (the split export's template.onnx)."""
    template, _ = net.eval().split()
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(1, 3, exemplar_size, exemplar_size, generator=gen) * 255.0
    with torch.no_grad():
        export_onnx(template, (z,), path, ['template'], ['zf'], opset)
    model = onnx.load(str(path))
    if fold_constants(model):
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    if runtime_weight_convs(path):
        raise ExportError(f'{path}: Conv nodes with run-time weights')
    return path


def load_tafa_search(spec: ModelSpec) -> TafaSearch:
    """Build the torch search side of a TAFA model directory (checkpoint + modules.pth)."""
    if 'modules' not in spec.files:
        raise ModelError(f'model {spec.name} ({spec.root}) is temporal but has no '
                         f'{MODULES_FILE} (role "modules"), which the torch backend needs; '
                         're-export it with siam-model export --modules')
    return TafaSearch(build_tafa_net(spec.arch, spec.path('checkpoint'), spec.path('modules')))
