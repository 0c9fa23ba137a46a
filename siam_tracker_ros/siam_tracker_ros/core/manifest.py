"""
Model directories: a ``manifest.json`` that says what the files are and how to use them.

A model directory holds the network graphs (ONNX), optionally a PyTorch checkpoint, and a
manifest with the family, the crop geometry, the input normalisation, the tracker
hyper-parameters the weights were tuned with and each file's sha256. Reading a manifest checks
every file it names, so a missing or corrupt model fails here with a clear message instead of
deep inside a runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple
import warnings

from .confidence import CUES_VERSION
from .config import from_mapping, MODEL_FIELDS, TrackerConfig

MANIFEST_NAME = 'manifest.json'
FORMAT_VERSION = 1
# Manifest entry: the cue definition (core/confidence.py CUES_VERSION) of the confidence
# coefficients in 'tracker'; absent in manifests written before it existed (version 1).
CUES_KEY = 'confidence_cues'
_COEFFICIENT_FIELDS = ('conf_coefficients', 'conf_coefficients_appearance')
DECODERS = ('anchor_free', 'anchor')
# backbone_head: one backbone graph for both crops plus a head(template_feat, search_feat).
# template_search: a template encoder graph plus a search graph that takes the template features.
LAYOUTS = {'backbone_head': ('backbone', 'head'), 'template_search': ('template', 'search')}
# A temporal search graph (TAFA's channel shift, manifest 'temporal_frames' N > 0) also takes
# the un-shifted search features of the N previous frames, t-1 first, and outputs frame t's.
TEMPORAL_OUTPUT = 'xf'
TEMPORAL_FRAMES = (0, 2)


def temporal_inputs(frames: int) -> Tuple[str, ...]:
    """Input names of a temporal search graph's previous features: xf_prev1 (t-1), ..."""
    return tuple(f'xf_prev{i}' for i in range(1, int(frames) + 1))


# Optional learned template fusion (nets.fusion_export): its graph, and the learned-module
# state the torch backend runs it (and a temporal search side) from. A manifest naming them
# has a 'fusion' entry with the graph's memory size N; every other model directory loads as
# before.
FUSION_ROLE = 'fusion'
MODULES_ROLE = 'modules'


class ModelError(RuntimeError):
    """A model directory is missing, incomplete or corrupt."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class AnchorSpec:
    """Anchor set of an anchor-based (SiamRPN) head."""

    ratios: Tuple[float, ...] = (0.33, 0.5, 1.0, 2.0, 3.0)
    scales: Tuple[float, ...] = (8.0,)

    @property
    def count(self) -> int:
        """Anchors per score-map cell."""
        return len(self.ratios) * len(self.scales)


@dataclass(frozen=True)
class ModelSpec:
    """A loaded, verified model directory."""

    root: Path
    name: str
    family: str
    decoder: str
    layout: str
    stride: int
    files: Mapping[str, str] = field(default_factory=dict)
    sha256: Mapping[str, str] = field(default_factory=dict)
    arch: str = ''
    input_order: str = 'bgr'
    input_mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    input_std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    anchors: Optional[AnchorSpec] = None
    # Previous frames whose search features the search graph takes (0: not temporal).
    temporal_frames: int = 0
    fusion_memory: int = 0

    @property
    def has_fusion(self) -> bool:
        """
        Whether the model has a learned template fusion of ``fusion_memory`` slots.

        A model directory has it exactly when it has a fusion graph (role 'fusion', checked by
        ``load_manifest``); a spec built for the torch backend alone may have just its
        ``modules`` file.
        """
        return self.fusion_memory > 0

    def path(self, role: str) -> Path:
        """Absolute path of the file playing ``role`` (e.g. 'backbone', 'head', 'checkpoint')."""
        if role not in self.files:
            raise ModelError(f'model {self.name} ({self.root}) has no {role!r} file; '
                             f'it has {sorted(self.files)}')
        return self.root / self.files[role]

    @property
    def graph_roles(self) -> Tuple[str, str]:
        """Return the two ONNX roles of this layout, in (template side, search side) order."""
        return LAYOUTS[self.layout]

    def to_manifest(self) -> Dict[str, Any]:
        """Return the JSON-ready manifest ('temporal_frames', 'fusion' only when used)."""
        data = {
            'format_version': FORMAT_VERSION,
            'name': self.name,
            'family': self.family,
            'arch': self.arch,
            'decoder': self.decoder,
            'layout': self.layout,
            'stride': self.stride,
            'input': {'order': self.input_order, 'mean': list(self.input_mean),
                      'std': list(self.input_std)},
            'tracker': model_settings(self.tracker),
            CUES_KEY: CUES_VERSION,
            'anchors': None if self.anchors is None else {
                'ratios': list(self.anchors.ratios), 'scales': list(self.anchors.scales)},
            'files': {role: {'path': rel, 'sha256': self.sha256.get(role, '')}
                      for role, rel in self.files.items()},
        }
        if self.temporal_frames:
            data['temporal_frames'] = self.temporal_frames
        if self.has_fusion:
            data['fusion'] = {'memory': int(self.fusion_memory)}
        return data


def model_settings(tracker: TrackerConfig) -> Dict[str, Any]:
    """Return the tracker settings a model directory records (MODEL_FIELDS), JSON-ready."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in tracker.flat().items() if k in MODEL_FIELDS}


def _current_settings(mpath: Path, data: Mapping[str, Any]) -> Dict[str, Any]:
    """
    Return the manifest's tracker settings, less coefficients fitted for other cues.

    Coefficients fitted for an earlier definition of the cues would weigh today's cues
    wrongly (version 1's score weight on today's absolute logit calls every box found), so
    they give way to the defaults, with a warning that says how to refit.
    """
    settings = dict(data.get('tracker', {}))
    version = data.get(CUES_KEY, 1)
    stale = [k for k in _COEFFICIENT_FIELDS if k in settings]
    if stale and version != CUES_VERSION:
        for key in stale:
            del settings[key]
        warnings.warn(f'{mpath}: its confidence coefficients were fitted for cue definition '
                      f'{version}, not {CUES_VERSION}; the defaults are used instead (refit '
                      'with `siam-eval --fit-confidence` to fit them to this model)',
                      stacklevel=3)
    return settings


def write_manifest(spec: ModelSpec) -> Path:
    """Write ``spec`` as manifest.json in its root, hashing every file it names."""
    hashes = {role: sha256_of(spec.root / rel) for role, rel in spec.files.items()}
    data = spec.to_manifest()
    for role, h in hashes.items():
        data['files'][role]['sha256'] = h
    out = spec.root / MANIFEST_NAME
    out.write_text(json.dumps(data, indent=2) + '\n')
    return out


def load_manifest(root, verify: bool = True) -> ModelSpec:
    """
    Read and check ``root/manifest.json``; raise ModelError saying what is wrong.

    ``root`` is the model directory, or the path of its manifest.json.
    """
    root = Path(root).expanduser().resolve()
    if root.name == MANIFEST_NAME and root.is_file():
        root = root.parent
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise ModelError(f'model directory {root} does not exist'
                         if not root.exists() else
                         f'{root} is a file; give the model directory (the folder with '
                         f'{MANIFEST_NAME})')
    if not mpath.is_file():
        raise ModelError(f'{root} has no {MANIFEST_NAME}; create one with '
                         f'`siam-model import ...` or give an upstream NanoTrack folder')
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f'{mpath} is not valid JSON: {exc}') from exc
    try:
        if data.get('format_version') != FORMAT_VERSION:
            raise ModelError(f'{mpath}: format_version {data.get("format_version")!r} '
                             f'is not {FORMAT_VERSION}')
        if data['decoder'] not in DECODERS:
            raise ModelError(f'{mpath}: decoder {data["decoder"]!r} not in {DECODERS}')
        if data['layout'] not in LAYOUTS:
            raise ModelError(f'{mpath}: layout {data["layout"]!r} not in {sorted(LAYOUTS)}')
        files = {role: entry['path'] for role, entry in data['files'].items()}
        hashes = {role: entry.get('sha256', '') for role, entry in data['files'].items()}
        for role in LAYOUTS[data['layout']]:
            if role not in files:
                raise ModelError(f'{mpath}: layout {data["layout"]} needs a {role!r} file')
        inp = data.get('input', {})
        anchors = data.get('anchors')
        memory = _fusion_memory(mpath, data, files)
        spec = ModelSpec(
            root=root, name=data['name'], family=data['family'], decoder=data['decoder'],
            layout=data['layout'], stride=int(data['stride']), files=files, sha256=hashes,
            arch=data.get('arch', ''), input_order=inp.get('order', 'bgr'),
            input_mean=tuple(float(v) for v in inp.get('mean', (0, 0, 0))),
            input_std=tuple(float(v) for v in inp.get('std', (1, 1, 1))),
            tracker=from_mapping(TrackerConfig, _current_settings(mpath, data)),
            anchors=None if not anchors else AnchorSpec(
                tuple(float(r) for r in anchors['ratios']),
                tuple(float(s) for s in anchors['scales'])),
            fusion_memory=memory)
    except KeyError as exc:
        raise ModelError(f'{mpath}: missing field {exc}') from exc
    if spec.decoder == 'anchor' and spec.anchors is None:
        raise ModelError(f'{mpath}: an anchor decoder needs an "anchors" entry')
    frames = data.get('temporal_frames', 0)
    if frames not in TEMPORAL_FRAMES or isinstance(frames, bool):
        raise ModelError(f'{mpath}: temporal_frames {frames!r} not in {TEMPORAL_FRAMES} (the '
                         'previous frames a TAFA search graph takes); re-export the model')
    if frames and spec.layout != 'template_search':
        raise ModelError(f'{mpath}: temporal_frames needs the template_search layout, not '
                         f'{spec.layout}')
    if frames:
        spec = replace(spec, temporal_frames=int(frames))
    if verify:
        verify_files(spec)
    return spec


def _fusion_memory(mpath: Path, data: Mapping[str, Any], files: Mapping[str, str]) -> int:
    """Return N of the manifest's 'fusion' entry (0 without a fusion graph); check it."""
    entry = data.get('fusion')
    if FUSION_ROLE not in files:
        if entry:
            raise ModelError(f'{mpath}: a "fusion" entry but no {FUSION_ROLE!r} file')
        return 0
    memory = entry.get('memory') if isinstance(entry, Mapping) else None
    if not isinstance(memory, int) or isinstance(memory, bool) or memory < 1:
        raise ModelError(f'{mpath}: a {FUSION_ROLE!r} file needs a "fusion" entry with the '
                         f'memory size, e.g. {{"memory": 3}}; got {entry!r}')
    return memory


def verify_files(spec: ModelSpec) -> None:
    """Check that every file exists and matches its recorded sha256."""
    for role, rel in spec.files.items():
        p = spec.root / rel
        if not p.is_file():
            raise ModelError(f'model {spec.name}: {role} file {p} is missing')
        want = spec.sha256.get(role)
        if want:
            got = sha256_of(p)
            if got != want:
                raise ModelError(f'model {spec.name}: {role} file {p} is corrupt or changed '
                                 f'(sha256 {got[:12]}..., manifest says {want[:12]}...); '
                                 're-import or re-fetch the model')
