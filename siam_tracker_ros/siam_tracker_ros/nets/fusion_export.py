"""
ONNX export of the learned template-fusion module (DASTSiam ST) as its own small graph.

The graph is run by the tracker only when the template is updated: inputs ``zf_initial``
(1, C, h, w), the initial template's features, and ``zf_memory`` (1, N, C, h, w), the features
of the last N template crops (oldest first; slots not filled yet hold the initial features);
output ``zf`` (1, C, h, w), the fused template features the search graph takes as its ``zf``
input. Shapes are static and the attention is MatMul/Softmax with constant weights: the graph
has no Conv at all, and ``runtime_weight_convs`` must find none.

A fine-tuned model's learned modules come from siam-train's ``modules.pth``, which
``nets.modules_file.read_modules`` reads; ``fusion_module`` rebuilds the ST module from it (for
the export, and for the torch backend from a model directory's copy).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Tuple, Union

import torch

from .export import compare_outputs, cpu_session, export_graph, ExportError
from .modules.st_fusion import STFusion
from .modules_file import LearnedFile, MODULES_FILE
from ..core.manifest import ModelError

PathLike = Union[str, Path]

FUSION_FILE = 'fusion.onnx'
FUSION_INPUTS = ('zf_initial', 'zf_memory')
FUSION_OUTPUT = 'zf'
# Relative to the largest reference value, as the template-feature check of the split export.
FUSION_TOL = 2e-4


def fusion_module(learned: LearnedFile, path: PathLike = MODULES_FILE) -> STFusion:
    """Rebuild the ST fusion module of ``learned`` in eval mode (ModelError when it has none)."""
    state = learned.module_state('st_fusion')
    if not learned.config.st_fusion or 'pos' not in state or 'attn.q.weight' not in state:
        raise ModelError(f'{path} has no trained st_fusion module (train with '
                         '--set modules.st_fusion=true)')
    positions, channels = (int(d) for d in state['pos'].shape)
    side = math.isqrt(positions)
    if side * side != positions:
        raise ModelError(f'{path}: st_fusion.pos has {positions} positions, not a square map')
    module = STFusion(channels, (side, side), int(state['attn.q.weight'].shape[0]))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f'{path}: the st_fusion state does not fit the module: {exc}') from exc
    return module.eval()


def fusion_inputs(module: STFusion, memory: int,
                  seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return example inputs (1, C, h, w), (1, memory, C, h, w) at a backbone feature scale."""
    if memory < 1:
        raise ValueError(f'the fusion memory must hold >= 1 template, got {memory}')
    gen = torch.Generator().manual_seed(seed)
    c, (h, w) = module.channels, module.size
    initial = torch.randn(1, c, h, w, generator=gen) * 2.0
    mem = initial[:, None] + torch.randn(1, memory, c, h, w, generator=gen)
    device = next(iter(module.parameters())).device
    return initial.to(device), mem.to(device)


def export_fusion(module: STFusion, path: PathLike, memory: int, opset: int = 17,
                  check: bool = True) -> Path:
    """
    Export ``module`` to ``path`` with static shapes for ``memory`` history slots.

    With ``check`` the graph is validated with ``onnx.checker`` and an ``ExportError`` is
    raised when a Conv would take run-time weights. Returns the path.
    """
    path = Path(path)
    was_training = module.training
    module.eval()
    try:
        return export_graph(module, fusion_inputs(module, memory), path, FUSION_INPUTS,
                            [FUSION_OUTPUT], opset, check)
    finally:
        module.train(was_training)


def check_fusion(module: STFusion, path: PathLike, seed: int = 1,
                 tol: float = FUSION_TOL) -> float:
    """
    Run the exported graph in ONNX Runtime (CPU) against ``module`` in torch.

    Inputs are random features of the graph's shapes (``seed``). Returns the max abs
    difference; raises ``ExportError`` when it exceeds ``tol`` times the largest torch value.
    """
    session = cpu_session(path)
    slots = session.get_inputs()[1].shape[1]
    if not isinstance(slots, int):
        raise ExportError(f'{path}: {FUSION_INPUTS[1]} must have a static shape, got '
                          f'{session.get_inputs()[1].shape}')
    initial, memory = fusion_inputs(module, slots, seed)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            ref = module(initial, memory).cpu().numpy()
    finally:
        module.train(was_training)
    got, = session.run([FUSION_OUTPUT], {FUSION_INPUTS[0]: initial.cpu().numpy(),
                                         FUSION_INPUTS[1]: memory.cpu().numpy()})
    return compare_outputs(path, [FUSION_OUTPUT], [got], [ref], [tol])[FUSION_OUTPUT]
