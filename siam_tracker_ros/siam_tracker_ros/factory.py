"""One call from a model path to a ready tracker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .backends.registry import create_backend
from .core.config import from_mapping
from .core.manifest import load_manifest, MANIFEST_NAME, ModelError, ModelSpec
from .core.tracker import SiameseTracker


def model_cache_dir() -> Path:
    """Where imported upstream folders are kept ($SIAM_MODEL_CACHE or ~/.cache/...)."""
    env = os.environ.get('SIAM_MODEL_CACHE')
    if env:
        return Path(env)
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'siam_tracker_ros'


def resolve_model(path, cache_dir: Optional[Path] = None) -> ModelSpec:
    """
    Load a product model directory, or import an upstream NanoTrack folder into the cache.

    ``path`` may also be the manifest.json of a model directory.
    """
    path = Path(path).expanduser()
    if path.name == MANIFEST_NAME and path.is_file():
        path = path.parent
    if (path / MANIFEST_NAME).is_file():
        return load_manifest(path)
    from .nets.nanotrack_import import find_upstream_files, import_key, import_nanotrack
    files = find_upstream_files(path)
    if files is None:
        if not path.exists():
            raise ModelError(f'model path {path} does not exist')
        if path.is_file():
            raise ModelError(f'{path} is a file; the model path is a model directory (with '
                             f'{MANIFEST_NAME}) or an upstream NanoTrack folder')
        raise ModelError(f'{path} is neither a model directory (no {MANIFEST_NAME}) nor an '
                         'upstream NanoTrack folder; see `siam-model import --help`')
    target = (cache_dir or model_cache_dir()) / f'{path.name}-{import_key(files)[:16]}'
    if (target / MANIFEST_NAME).is_file():
        return load_manifest(target)
    for role in ('backbone', 'head'):
        _check_graph(role, files[role])
    return import_nanotrack(path, target)


def _check_graph(role: str, path: Path) -> None:
    """Raise ModelError naming ``path`` when it is not a readable ONNX graph."""
    import onnx
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors come in several types
        raise ModelError(f'{role} graph {path} is not a readable ONNX file ({exc}); it may be '
                         'truncated or corrupt: download the model again') from exc


def load_tracker(model, backend: str = 'auto', device: str = 'cpu',
                 backend_options: Optional[dict] = None, **config: Any) -> SiameseTracker:
    """
    Build a SiameseTracker for a model path (or ModelSpec) on the named backend.

    Keyword arguments override TrackerConfig fields of the model's manifest.
    """
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    tracker_config = from_mapping(type(spec.tracker), config, base=spec.tracker, strict=True)
    engine = create_backend(backend, spec, device=device, **(backend_options or {}))
    return SiameseTracker(spec, engine, tracker_config)
