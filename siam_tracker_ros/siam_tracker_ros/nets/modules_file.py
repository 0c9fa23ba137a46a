"""
siam-train's ``modules.pth``: the learned modules of a fine-tuned NanoTrack, read in one place.

The file is ``{'modules': LearnedModules settings, 'state_dict': the modules' state under
TrainNet's names (``st_fusion.*``, ``tafa.*``, ...), 'arch': the base network}``; files written
before the settings were saved in it are read with the run's ``config.yaml`` beside them.
``siam-model export --modules``, the torch backend (from a model folder's copy) and siam-train's
validation all read it with ``read_modules``. What each module needs at inference:

* ``st_fusion``: its own graph, run on template updates (``nets.fusion_export``);
* ``layer_aggregation``, ``tafa``, ``feature_modulation``, ``da_attention`` (the graph
  modules): the template / search graphs exported from the ``TrainNet`` with them
  (``nets.module_export``); only ``tafa`` changes the search graph's interface (it also takes
  the previous frames' features);
* the margin loss and adversarial dropout: nothing (they shape training only).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
import yaml

from .registry import _numpy_safe_globals
from .train_net import LearnedModules
from ..core.manifest import ModelError

PathLike = Union[str, Path]

MODULES_FILE = 'modules.pth'
# Learned modules inside the template / search graphs (nets.module_export), in net order.
GRAPH_MODULES = ('layer_aggregation', 'tafa', 'feature_modulation', 'da_attention')
# Learned modules that run at inference, each from its own part of the state.
RUNTIME_MODULES = ('st_fusion',) + GRAPH_MODULES


@dataclass(frozen=True)
class LearnedFile:
    """A siam-train ``modules.pth``: the module settings, their state and the base arch."""

    config: LearnedModules
    state: Mapping[str, torch.Tensor]
    arch: str

    def module_state(self, name: str) -> Dict[str, torch.Tensor]:
        """Return the state of module ``name`` (e.g. 'tafa') without its ``name.`` prefix."""
        prefix = name + '.'
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}

    @property
    def runtime(self) -> Tuple[str, ...]:
        """Return the switched-on modules that run at inference (RUNTIME_MODULES order)."""
        return tuple(name for name in RUNTIME_MODULES if getattr(self.config, name))

    @property
    def graph(self) -> Tuple[str, ...]:
        """Return the switched-on modules inside the template / search graphs."""
        return tuple(name for name in GRAPH_MODULES if getattr(self.config, name))


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


def read_modules(path: PathLike, arch: str = '') -> LearnedFile:
    """
    Read a siam-train ``modules.pth`` (ModelError saying what is wrong).

    ``arch`` (e.g. 'nanotrack_v3'), when given, must be the base network the modules were
    trained with, where the file records it.
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


def check_exportable(learned: LearnedFile, path: PathLike = MODULES_FILE) -> None:
    """
    Raise ModelError unless ``learned`` can be exported (see the module doc).

    Every module has an export; the state must hold exactly the switched-on runtime modules'
    parts.
    """
    prefixes = tuple(name + '.' for name in learned.runtime)
    extra = sorted(k for k in learned.state if not k.startswith(prefixes))
    empty = [name for name in learned.runtime if not learned.module_state(name)]
    if extra or empty:
        raise ModelError(f'{path}: its state does not match its settings (unexpected '
                         f'{extra[:4]}, no state for {empty})')


def runtime_part(learned: LearnedFile) -> LearnedFile:
    """Return ``learned`` with only its runtime modules (settings and state), the rest off."""
    config = replace(learned.config, margin_weight=0.0, adv_dropout_weight=0.0)
    prefixes = tuple(name + '.' for name in learned.runtime)
    state = {k: v for k, v in learned.state.items() if k.startswith(prefixes)}
    return LearnedFile(config, state, learned.arch)


def save_modules(learned: LearnedFile, path: PathLike) -> Path:
    """Write ``learned`` as a self-contained modules.pth (settings, state, arch)."""
    path = Path(path)
    torch.save({'modules': asdict(learned.config),
                'state_dict': {k: v.detach().cpu() for k, v in learned.state.items()},
                'arch': learned.arch}, path)
    return path
