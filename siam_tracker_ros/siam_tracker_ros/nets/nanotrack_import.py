"""
Import an upstream NanoTrack folder (HonglinChu/SiamTrackers layout) as a product model.

The upstream folder holds ``nanotrack_backbone*.onnx`` (fixed 1x3x255x255 input),
``nanotrack_head*.onnx``, ``configvN.yaml`` and optionally the ``nanotrackvN.pth`` checkpoint.
The backbone is fully convolutional apart from squeeze-excitation blocks that pool globally, so
its spatial input can be made dynamic by editing the graph's declared shapes: one graph then
encodes the 127 template and the 255 search crop, as the authors' tracker does in PyTorch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
import re
import shutil
from typing import Dict, Optional

from ..core.confidence import CUES_VERSION
from ..core.config import TrackerConfig
from ..core.manifest import model_settings, ModelError, ModelSpec, write_manifest

# The importer's output format: part of the import cache key (``import_key``), so a change
# of the graph conversion re-imports cached upstream folders.
IMPORT_FORMAT = 'nanotrack-import-2'

# Upstream config key -> TrackerConfig field.
_TRACK_KEYS = {'EXEMPLAR_SIZE': 'exemplar_size', 'INSTANCE_SIZE': 'instance_size',
               'CONTEXT_AMOUNT': 'context_amount', 'PENALTY_K': 'penalty_k',
               'WINDOW_INFLUENCE': 'window_influence', 'LR': 'lr'}


def find_upstream_files(folder) -> Optional[Dict[str, Path]]:
    """Find an upstream NanoTrack folder's backbone/head/config(/checkpoint) files, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None

    def one(pattern):
        hits = sorted(p for p in folder.glob(pattern) if 'quant' not in p.name)
        return hits[0] if hits else None

    files = {'backbone': one('nanotrack_backbone*.onnx'), 'head': one('nanotrack_head*.onnx'),
             'config': one('config*.yaml'), 'checkpoint': one('nanotrack*.pth')}
    if not (files['backbone'] and files['head'] and files['config']):
        return None
    return {k: v for k, v in files.items() if v is not None}


def upstream_version(files: Dict[str, Path]) -> int:
    """Return the NanoTrack version (1, 2, 3) from the config file name, e.g. configv3.yaml."""
    for path in (files['config'], files['config'].parent):
        match = re.search(r'v(\d)', path.name)
        if match and match.group(1) in '123':
            return int(match.group(1))
    raise ModelError(f'cannot tell the NanoTrack version of {files["config"]}; '
                     'name the config configv1/v2/v3.yaml')


def read_tracker_config(config_yaml: Path) -> TrackerConfig:
    """Tracker hyper-parameters and stride from an upstream yaml (TRACK and POINT sections)."""
    import yaml
    data = yaml.safe_load(Path(config_yaml).read_text()) or {}
    track = data.get('TRACK', {})
    values = {field: track[key] for key, field in _TRACK_KEYS.items() if key in track}
    return TrackerConfig().replace(**values)


def import_key(files: Dict[str, Path]) -> str:
    """
    Hex digest naming an upstream folder's import (factory.resolve_model's cache).

    It covers the files, the importer's format and what the import writes into the manifest:
    the tracker settings (such as the confidence coefficients, whose defaults change when the
    confidence is refitted) and the cue definition they were fitted for (a manifest of an
    older definition would have its coefficients set aside), so a cached import is never
    older than the code that would make it.
    """
    settings = model_settings(read_tracker_config(files['config']))
    digest = hashlib.sha256(f'{IMPORT_FORMAT}/cues-{CUES_VERSION}'.encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for key in sorted(files):
        digest.update(files[key].read_bytes())
    return digest.hexdigest()


def make_backbone_dynamic(src, dst) -> None:
    """Rewrite a fixed-size backbone graph so its input height and width are free."""
    import onnx
    model = onnx.load(str(src))
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].ClearField('dim_value')
            dims[2].dim_param = 'height' if value in graph.input else 'out_height'
            dims[3].ClearField('dim_value')
            dims[3].dim_param = 'width' if value in graph.input else 'out_width'
    # Inferred intermediate shapes were computed for 255x255: drop them.
    del graph.value_info[:]
    for node in graph.node:
        if node.op_type in ('AveragePool', 'MaxPool') and any(
                a.name == 'kernel_shape' and max(a.ints) > 7 for a in node.attribute):
            raise ModelError(f'{src}: pooling node {node.name} has a fixed large kernel; the '
                             'backbone is not size-agnostic and cannot be made dynamic')
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def import_nanotrack(folder, out_dir, name: Optional[str] = None) -> ModelSpec:
    """Turn an upstream NanoTrack folder into a product model directory; return its spec."""
    files = find_upstream_files(folder)
    if files is None:
        raise ModelError(f'{folder} is not an upstream NanoTrack folder: it needs '
                         'nanotrack_backbone*.onnx, nanotrack_head*.onnx and configvN.yaml')
    version = upstream_version(files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_backbone_dynamic(files['backbone'], out / 'backbone.onnx')
    shutil.copyfile(files['head'], out / 'head.onnx')
    roles = {'backbone': 'backbone.onnx', 'head': 'head.onnx'}
    if 'checkpoint' in files:
        shutil.copyfile(files['checkpoint'], out / f'nanotrackv{version}.pth')
        roles['checkpoint'] = f'nanotrackv{version}.pth'
    spec = ModelSpec(root=out.resolve(), name=name or f'nanotrack-v{version}',
                     family='nanotrack', decoder='anchor_free', layout='backbone_head',
                     stride=16, files=roles, arch=f'nanotrack_v{version}',
                     tracker=read_tracker_config(files['config']))
    write_manifest(spec)
    return spec
