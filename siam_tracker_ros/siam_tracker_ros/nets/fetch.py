"""
Download published models from pinned-commit URLs, check their sha256, import them.

Each catalogue entry pins the upstream repository commit and the sha256 of every file, so a
fetched model is byte-for-byte the one evaluated here. ``mirror`` (or $SIAM_MODEL_MIRROR) points
at a folder or URL laid out as ``MIRROR/<model name>/<file name>`` for machines without
internet access.
"""
from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import tempfile
from typing import Dict, Optional, Tuple
from urllib.parse import quote
import urllib.request

from ..core.manifest import ModelError, ModelSpec, sha256_of

MIRROR_ENV = 'SIAM_MODEL_MIRROR'
_NANOTRACK_COMMIT = '248663fde6bf7c40190cf10ee396d5662919ecd3'
_NANOTRACK_BASE = ('https://raw.githubusercontent.com/HonglinChu/SiamTrackers/'
                   f'{_NANOTRACK_COMMIT}/NanoTrack/models/')


@dataclass(frozen=True)
class RemoteFile:
    """One file of a published model: its path in the upstream repo and its sha256."""

    repo_path: str
    sha256: str

    @property
    def name(self) -> str:
        """File name."""
        return self.repo_path.rsplit('/', 1)[-1]


CATALOG: Dict[str, Tuple[str, Tuple[RemoteFile, ...]]] = {
    'nanotrack-v1': (_NANOTRACK_BASE, (
        RemoteFile('nanotrackv1/nanotrack_backbone_sim.onnx',
                   'f6fdf311bdc846510c2f9f0b2b8159c7e0cf5d80ed18c9079faeb32db460cba9'),
        RemoteFile('nanotrackv1/nanotrack_head_sim.onnx',
                   '4c987e5121cc400b6175f2168c30c84857864fe36d5e7a14df0c27e8e5b9540d'),
        RemoteFile('pretrained/nanotrackv1.pth',
                   '2a24bbfd1163a7692ab22100336a54de55dde12301b7d8ae7a4e745fb10b09a3'),
        RemoteFile('config/configv1.yaml',
                   '557c694029c2f5286423919591661bf551d463e3f01b932a245e7f0033a8815f'))),
    'nanotrack-v2': (_NANOTRACK_BASE, (
        RemoteFile('nanotrackv2/nanotrack_backbone_sim.onnx',
                   '530bdd0cd00f19afab79a863e71ba71e3312395a5dc9151af675082bdaaa2fc4'),
        RemoteFile('nanotrackv2/nanotrack_head_sim.onnx',
                   '0d8c0637be849f092cc7236cae02e55c8b9455ebe37ba50601d6115db4247cd9'),
        RemoteFile('pretrained/nanotrackv2.pth',
                   '938a320c560fd8c8d6a148a76a072bca29c529ce16591c9a2157859ee0ecc5e1'),
        RemoteFile('config/configv2.yaml',
                   '6783e7617efc6dc22591a162aa566f1b2d17a1f95cfb5707277c1c75424c1e2a'))),
    'nanotrack-v3': (_NANOTRACK_BASE, (
        RemoteFile('nanotrackv3/nanotrack_backbone.onnx',
                   '50be1320abf9384fd3479ea829f95e244cf3f3838190c5ab60c750fb8c1ce828'),
        RemoteFile('nanotrackv3/nanotrack_head.onnx',
                   '75357903be3f4817c965af16cb5a11fd32b1467f597a408405a98635ac63f61d'),
        RemoteFile('pretrained/nanotrackv3.pth',
                   '4f0d25108385a67bdec5fa01ca37c74acb72343b53996dd645fe18b86e512e69'),
        RemoteFile('config/configv3.yaml',
                   '60ea9dc886dcdd0451e60b404490a39d19495480185ca7b6299b72b74d746f87'))),
}
DEFAULT_MODEL = 'nanotrack-v3'


def source_url(name: str, remote: RemoteFile, mirror: Optional[str]) -> str:
    """Where to download ``remote`` from: the mirror if one is given, else upstream."""
    if not mirror:
        return CATALOG[name][0] + remote.repo_path
    if '://' not in mirror:
        return Path(mirror, name, remote.name).resolve().as_uri()
    return f'{mirror.rstrip("/")}/{quote(name)}/{quote(remote.name)}'


def download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` and check its sha256; leave nothing behind on failure."""
    part = dest.with_name(dest.name + '.part')
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, 'wb') as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ModelError(f'cannot download {url}: {exc}; without internet access set '
                         f'{MIRROR_ENV} to a folder or URL that holds the model files') from exc
    got = sha256_of(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise ModelError(f'{url}: sha256 {got} does not match the pinned {sha256}; '
                         'the download or the mirror is corrupt')
    part.replace(dest)


def fetch_model(name: str, out_dir, mirror: Optional[str] = None) -> ModelSpec:
    """Download catalogue model ``name`` and import it as a product model in ``out_dir``."""
    from .nanotrack_import import import_nanotrack
    if name not in CATALOG:
        raise ModelError(f'unknown model {name!r}; available: {sorted(CATALOG)}')
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    with tempfile.TemporaryDirectory(prefix='siam-fetch-') as tmp:
        for remote in CATALOG[name][1]:
            download(source_url(name, remote, mirror), Path(tmp) / remote.name, remote.sha256)
        return import_nanotrack(tmp, out_dir, name=name)
