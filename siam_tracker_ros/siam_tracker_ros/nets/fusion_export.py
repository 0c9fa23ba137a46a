"""
ONNX export of the learned template-fusion module (DASTSiam ST) as its own small graph.

The graph is run by the tracker only when the template is updated: inputs ``zf_initial``
(1, C, h, w), the initial template's features, and ``zf_memory`` (1, N, C, h, w), the features
of the last N template crops (oldest first; slots not filled yet hold the initial features);
output ``zf`` (1, C, h, w), the fused template features the search graph takes as its ``zf``
input. Shapes are static and the attention is MatMul/Softmax with constant weights: the graph
has no Conv at all, and ``runtime_weight_convs`` must find none.

A fine-tuned model's learned modules come from siam-train's ``modules.pth``
(``{'modules': LearnedModules settings, 'state_dict': ..., 'arch': ...}``; files written before
the settings were saved in it are read with the run's ``config.yaml`` beside them):
``read_modules`` reads it, ``check_exportable`` refuses modules that change the template or
search graphs (not exported yet), and ``fusion_module`` rebuilds the ST module from it (the
export, and the torch backend from a model directory's copy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np
import onnx
import torch
import yaml

from .export import export_onnx, ExportError, fold_constants
from .modules.st_fusion import STFusion
from .onnx_inspect import runtime_weight_convs
from .train_net import LearnedModules
from ..core.manifest import ModelError

PathLike = Union[str, Path]

FUSION_FILE = 'fusion.onnx'
MODULES_FILE = 'modules.pth'
FUSION_INPUTS = ('zf_initial', 'zf_memory')
FUSION_OUTPUT = 'zf'
# Relative to the largest reference value, as the template-feature check of the split export.
FUSION_TOL = 2e-4
# Learned modules that change the template or search graphs: no export for them yet.
UNEXPORTED = ('da_attention', 'tafa', 'feature_modulation', 'layer_aggregation')
_FUSION_PREFIX = 'st_fusion.'


@dataclass(frozen=True)
class LearnedFile:
    """A siam-train ``modules.pth``: the module settings, their state and the base arch."""

    config: LearnedModules
    state: Mapping[str, torch.Tensor]
    arch: str


def _settings(path: Path, stored: Any) -> Mapping[str, Any]:
    if isinstance(stored, Mapping):
        return stored
    run_config = path.parent / 'config.yaml'
    if not run_config.is_file():
        raise ModelError(f'{path} does not record its module settings and there is no '
                         f"{run_config.name} of its training run beside it; put that run's "
                         'config.yaml next to it')
    try:
        values = yaml.safe_load(run_config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f'cannot read the module settings in {run_config}: {exc}') from exc
    section = values.get('modules') if isinstance(values, Mapping) else None
    if not isinstance(section, Mapping):
        raise ModelError(f'{run_config} has no "modules" section; {path} needs it')
    return section


def read_modules(path: Union[str, Path], arch: str = '') -> LearnedFile:
    """
    Read a siam-train ``modules.pth`` (ModelError saying what is wrong).

    ``arch`` (e.g. 'nanotrack_v3'), when given, must be the base network the modules were
    trained with, where the file records it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'learned-modules file {path} does not exist')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ModelError(f'cannot read learned-modules file {path}: {exc}') from exc
    if not isinstance(obj, Mapping) or not isinstance(obj.get('state_dict'), Mapping):
        raise ModelError(f'{path} is not a siam-train modules.pth (a mapping with '
                         '"modules" and "state_dict")')
    settings = _settings(path, obj.get('modules'))
    known = {f.name for f in fields(LearnedModules)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ModelError(f'{path}: unknown module settings {unknown}; known: {sorted(known)}')
    try:
        config = LearnedModules(**settings)
    except (TypeError, ValueError) as exc:
        raise ModelError(f'{path}: bad module settings: {exc}') from exc
    stored_arch = str(obj.get('arch') or '')
    if arch and stored_arch and stored_arch != arch:
        raise ModelError(f'{path} holds modules trained on {stored_arch}, not {arch}')
    state = {str(k): v for k, v in obj['state_dict'].items()}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f'{path}: its state_dict holds values that are not tensors')
    return LearnedFile(config, state, stored_arch or arch)


def check_exportable(learned: LearnedFile, path: Union[str, Path] = 'modules.pth') -> None:
    """
    Raise ModelError when ``learned`` has modules whose export is not supported yet.

    The margin loss and adversarial dropout shape training only (nothing to export); ST
    fusion is its own graph; the others change the template or search graphs.
    """
    on = [name for name in UNEXPORTED if getattr(learned.config, name)]
    if on:
        raise ModelError(f'{path}: the learned modules {on} change the template/search graphs '
                         'and cannot be exported yet; export supports st_fusion (its own '
                         'graph) and the training-only margin loss and adversarial dropout')
    extra = sorted(k for k in learned.state if not k.startswith(_FUSION_PREFIX))
    if extra or (learned.config.st_fusion and not learned.state):
        raise ModelError(f'{path}: its state does not match its settings (unexpected '
                         f'{extra[:4]}, or no st_fusion state)')


def fusion_module(learned: LearnedFile, path: Union[str, Path] = 'modules.pth') -> STFusion:
    """Rebuild the ST fusion module of ``learned`` in eval mode (ModelError when it has none)."""
    state = {k[len(_FUSION_PREFIX):]: v for k, v in learned.state.items()
             if k.startswith(_FUSION_PREFIX)}
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


def save_modules(learned: LearnedFile, path: Union[str, Path]) -> Path:
    """Write ``learned`` as a self-contained modules.pth (settings, state, arch)."""
    path = Path(path)
    torch.save({'modules': asdict(learned.config),
                'state_dict': {k: v.detach().cpu() for k, v in learned.state.items()},
                'arch': learned.arch}, path)
    return path


def fusion_state(module: STFusion) -> Dict[str, torch.Tensor]:
    """Return ``module``'s state under the names TrainNet gives it (``st_fusion.*``)."""
    return {_FUSION_PREFIX + k: v.detach().cpu() for k, v in module.state_dict().items()}


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
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        args = fusion_inputs(module, memory)
        with torch.no_grad():
            export_onnx(module, args, path, FUSION_INPUTS, [FUSION_OUTPUT], opset)
    finally:
        module.train(was_training)
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


def check_fusion(module: STFusion, path: PathLike, seed: int = 1,
                 tol: float = FUSION_TOL) -> float:
    """
    Run the exported graph in ONNX Runtime (CPU) against ``module`` in torch.

    Inputs are random features of the graph's shapes (``seed``). Returns the max abs
    difference; raises ``ExportError`` when it exceeds ``tol`` times the largest torch value.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=['CPUExecutionProvider'])
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
    if got.shape != ref.shape:
        raise ExportError(f'{path}: output shape {got.shape} != torch {ref.shape}')
    err = float(np.abs(got - ref).max())
    peak = float(np.abs(ref).max())
    if err > tol * peak:
        raise ExportError(f'{path}: ONNX Runtime differs from torch by {err:.3g} > {tol} * '
                          f'peak {peak:.3g}')
    return err
