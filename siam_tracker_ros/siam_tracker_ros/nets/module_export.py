"""
A NanoTrack fine-tuned with learned modules: its template and search graphs, export and check.

``siam-train`` writes ``model.pth`` (the base NanoTrack weights) and ``modules.pth`` (read by
``nets.modules_file``). The modules that act inside the template or search graphs
(``nets.modules_file.GRAPH_MODULES``) are rebuilt here as an eval-mode ``TrainNet``
(``module_net``); ``siam-model export --modules`` (``nets.export.export_nanotrack``) writes the
graphs below in place of the base ones, and the torch backend runs the same wrappers. ST fusion
is its own graph (``nets.fusion_export``); the training-only modules need nothing.

* ``layer_aggregation`` is part of feature extraction: the template graph is
  ``TrainNet.features`` and the search graph's backbone aggregates too. Same inputs and outputs
  as the base graphs; they gain constant-weight 1x1 Convs (BatchNorm folded in), AveragePool,
  Mul and Add.
* ``feature_modulation`` and ``da_attention`` sit between the backbone and the head, on the
  search features and the template features the search graph already takes as ``zf`` (the
  fused ones when ST fusion is on, as in training): the search graph keeps its inputs and
  outputs and gains ReduceMean, Gemm/MatMul, LayerNormalization, Softmax, Mul and Add.
* ``tafa`` changes the search graph's interface: it also takes ``xf_prev1``, ``xf_prev2``
  (1, C, 16, 16), the un-shifted features of the search crops of frames t-1 and t-2, and
  outputs ``xf``, frame t's un-shifted features, which the tracker hands back on the next
  frames. The manifest records ``temporal_frames: 2``. Where a neighbour does not exist yet, the
  nearest available frame stands in, down to frame t itself (``TemporalShift``'s rule, applied
  by ``backends.base.neighbour_features``).

Any combination exports. No graph has a Conv with run-time weights (``runtime_weight_convs``);
every graph is checked against the torch ``TrainNet`` in ONNX Runtime (``check_module_graphs``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
import torch.nn as nn

from .export import compare_outputs, cpu_session, export_graph
from .modules_file import LearnedFile, MODULES_FILE
from .nanotrack import NanoTrack
from .train_net import LearnedModules, TrainNet
from ..core.manifest import ModelError, temporal_inputs, TEMPORAL_OUTPUT

PathLike = Union[str, Path]

FRAMES = 2                      # TAFA's neighbours: t-1 and t-2
PREVIOUS_INPUTS = temporal_inputs(FRAMES)
# As the split export's checks: template / backbone features and the head's outputs, each
# relative to the largest torch value.
FEATURE_TOL = 2e-4
OUTPUT_TOL = 1e-3


def module_net(base: NanoTrack, learned: LearnedFile, path: PathLike = MODULES_FILE) -> TrainNet:
    """
    Return the eval-mode ``TrainNet`` of ``base`` plus the graph modules of ``learned``.

    Only the state of the switched-on graph modules is used (``learned.graph``); ModelError
    when there is none, or when their state does not fit.
    """
    if not learned.graph:
        raise ModelError(f'{path} has no learned module of the template/search graphs')
    if not isinstance(base, NanoTrack):
        raise ModelError(f'the learned modules need a NanoTrack net, not {type(base).__name__}')
    c = learned.config
    net = TrainNet(base, LearnedModules(
        tafa=c.tafa, tafa_channels=c.tafa_channels, feature_modulation=c.feature_modulation,
        da_attention=c.da_attention, layer_aggregation=c.layer_aggregation))
    for name in learned.graph:
        module = getattr(net, name)
        own = module.state_dict()
        state = learned.module_state(name)
        missing = sorted(f'{name}.{k}' for k in set(own) - set(state))
        unexpected = sorted(f'{name}.{k}' for k in set(state) - set(own))
        wrong = [f'{name}.{k}' for k in own
                 if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise ModelError(f'{path} does not match the {name} module of this net: missing '
                             f'{missing[:6]}, unexpected {unexpected[:6]}, other shapes '
                             f'{wrong[:6]}')
        module.load_state_dict(state)
    return net.eval()


class ModuleTemplate(nn.Module):
    """Template side of a ``TrainNet``: template crop -> zf (aggregated with layer_aggregation)."""

    def __init__(self, net: TrainNet):
        super().__init__()
        self.net = net
        # torch.onnx.export restores the exported module's mode, and with it the net's.
        self.train(net.training)

    def forward(self, template: torch.Tensor) -> torch.Tensor:
        """Encode a template crop."""
        return self.net.features(template)


class ModuleSearch(nn.Module):
    """
    Search side of a ``TrainNet``: (search, zf, *previous) -> (cls, reg), plus xf with TAFA.

    As ``TrainNet.forward`` on frame t: backbone (+ layer_aggregation), tafa,
    feature_modulation, da_attention, head.
    """

    def __init__(self, net: TrainNet):
        super().__init__()
        self.net = net
        self.train(net.training)

    @property
    def temporal(self) -> bool:
        """Whether the graph takes the previous frames' features (TAFA on)."""
        return self.net.tafa is not None

    def forward(self, search: torch.Tensor, zf: torch.Tensor,
                *previous: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Score a search crop against template features (and earlier frames' features, t-1 first).

        With TAFA and no earlier frame, frame t stands in for its neighbours
        (``TemporalShift(xf, None)``); with one, it stands in for t-2 as well.
        """
        net = self.net
        if previous and net.tafa is None:
            raise ValueError('previous frames given to a search graph without TAFA')
        xf = net.features(search)
        x = xf
        if net.tafa is not None:
            history = torch.stack(previous[::-1], dim=1) if previous else None  # oldest first
            x = net.tafa(xf, history)
        if net.feature_modulation is not None:
            x = net.feature_modulation(zf, x)
        if net.da_attention is not None:
            zf, x = net.da_attention(zf, x)
        cls, reg = net.base.ban_head(zf, x)
        return (cls, reg, xf) if net.tafa is not None else (cls, reg)


def search_names(net: TrainNet) -> Tuple[List[str], List[str]]:
    """(input names, output names) of the search graph of ``net``."""
    if net.tafa is None:
        return ['search', 'zf'], ['cls', 'reg']
    return ['search', 'zf', *PREVIOUS_INPUTS], ['cls', 'reg', TEMPORAL_OUTPUT]


def example_inputs(net: TrainNet, instance_size: int = 255, exemplar_size: int = 127,
                   seed: int = 0) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """(template crop, search inputs) from random crops: real (aggregated) backbone features."""
    if net.training:
        raise ValueError('example_inputs needs the net in eval mode (BatchNorm would train)')
    gen = torch.Generator().manual_seed(seed)
    crops = torch.rand(FRAMES + 1, 3, instance_size, instance_size, generator=gen) * 255.0
    z = torch.rand(1, 3, exemplar_size, exemplar_size, generator=gen) * 255.0
    with torch.no_grad():
        zf = net.features(z)
        feats = net.features(crops[1:])
    previous = tuple(feats[i:i + 1] for i in range(FRAMES)) if net.tafa is not None else ()
    return z, (crops[:1], zf) + previous


def export_module_graphs(net: TrainNet, template_path: PathLike, search_path: PathLike,
                         instance_size: int = 255, exemplar_size: int = 127, opset: int = 17,
                         check: bool = True) -> List[Path]:
    """
    Export the graphs the modules of ``net`` change (static shapes); return their paths.

    The search graph always; the template graph only with layer_aggregation (otherwise the
    base one is the same graph). With ``check`` each is validated with ``onnx.checker`` and an
    ``ExportError`` is raised when a Conv would take run-time weights.
    """
    net.eval()
    z, args = example_inputs(net, instance_size, exemplar_size)
    written = []
    if net.layer_aggregation is not None:
        written.append(export_graph(ModuleTemplate(net), (z,), template_path, ['template'],
                                    ['zf'], opset, check))
    written.append(export_graph(ModuleSearch(net), args, search_path, *search_names(net),
                                opset, check))
    return written


def check_module_graphs(net: TrainNet, template_path: PathLike, search_path: PathLike,
                        seed: int = 1) -> Dict[str, float]:
    """
    Run the exported graphs in ONNX Runtime (CPU) against ``net`` in torch.

    Inputs are real backbone features of random crops (``seed``); the template graph is
    checked only with layer_aggregation (as ``export_module_graphs`` writes it). Returns the
    max abs difference per output ('template_zf', 'cls', 'reg', 'xf'); raises ``ExportError``
    when one exceeds its tolerance (FEATURE_TOL for features, OUTPUT_TOL for cls and reg,
    relative to the largest torch value).
    """
    net.eval()
    session = cpu_session(search_path)
    size = int(session.get_inputs()[0].shape[-1])
    z, args = example_inputs(net, size, seed=seed)
    errors: Dict[str, float] = {}
    if net.layer_aggregation is not None:
        with torch.no_grad():
            ref = ModuleTemplate(net)(z).numpy()
        got = cpu_session(template_path).run(['zf'], {'template': z.numpy()})
        errors['template_zf'] = compare_outputs(template_path, ['zf'], got, [ref],
                                                [FEATURE_TOL])['zf']
    inputs, outputs = search_names(net)
    with torch.no_grad():
        ref = [t.numpy() for t in ModuleSearch(net)(*args)]
    got = session.run(outputs, {n: a.numpy() for n, a in zip(inputs, args)})
    errors.update(compare_outputs(search_path, ('cls', 'reg', 'xf'), got, ref,
                                  (OUTPUT_TOL, OUTPUT_TOL, FEATURE_TOL)))
    return errors
