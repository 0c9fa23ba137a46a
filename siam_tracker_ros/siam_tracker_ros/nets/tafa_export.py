"""
A NanoTrack model fine-tuned with TAFA's temporal shift: its search graph, export and check.

``siam-train ... --set modules.tafa=true`` writes ``model.pth`` (the base NanoTrack weights) and
``modules.pth`` (read by ``nets.modules_file``); ``siam-model export --modules``
(``nets.export.export_nanotrack``) writes the search graph below in place of the base one.
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

from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np
import onnx
import torch
import torch.nn as nn

from .export import export_onnx, ExportError, fold_constants
from .modules_file import LearnedFile, MODULES_FILE
from .nanotrack import NanoTrack
from .onnx_inspect import runtime_weight_convs
from .train_net import LearnedModules, TrainNet
from ..core.manifest import ModelError, temporal_inputs, TEMPORAL_OUTPUT

PathLike = Union[str, Path]

FRAMES = 2                      # TAFA's neighbours: t-1 and t-2
PREVIOUS_INPUTS = temporal_inputs(FRAMES)
# As the split export's checks: template / backbone features and the head's outputs, each
# relative to the largest torch value.
FEATURE_TOL = 2e-4
OUTPUT_TOL = 1e-3


def tafa_net(base: NanoTrack, learned: LearnedFile, path: PathLike = MODULES_FILE) -> TrainNet:
    """
    Return the eval-mode ``TrainNet`` of ``base`` plus the TAFA shift of ``learned``.

    Only the ``tafa.*`` part of the state is used (the other modules run elsewhere or not at
    all, see ``nets.modules_file``); ModelError when ``learned`` has no TAFA module or its
    state does not fit.
    """
    if not learned.config.tafa:
        raise ModelError(f'{path} has no TAFA module (modules.tafa is false)')
    if not isinstance(base, NanoTrack):
        raise ModelError(f'TAFA needs a NanoTrack net, not {type(base).__name__}')
    net = TrainNet(base, LearnedModules(tafa=True, tafa_channels=learned.config.tafa_channels))
    own = net.tafa.state_dict()
    state = learned.module_state('tafa')
    missing = sorted(f'tafa.{k}' for k in set(own) - set(state))
    unexpected = sorted(f'tafa.{k}' for k in set(state) - set(own))
    wrong = [f'tafa.{k}' for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ModelError(f'{path} does not match the TAFA module of this net: missing '
                         f'{missing[:6]}, unexpected {unexpected[:6]}, other shapes '
                         f'{wrong[:6]}')
    net.tafa.load_state_dict(state)
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
