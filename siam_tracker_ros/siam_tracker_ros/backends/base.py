"""
The one small interface every inference backend implements.

A backend holds no template state: ``encode_template`` turns a template crop into features,
``track`` runs a search crop through the head with the features it is given. The tracker owns
the features, so template update is plain numpy and every backend shares one decoder.
All arrays are float32 NCHW with batch 1; crops are raw pixels in the model's channel order
(normalisation, if any, is the backend's job, from the model spec).

A temporal model (manifest ``temporal_frames`` N > 0: TAFA's channel shift) also takes the
search features of the previous frames. Its backend has ``temporal = N`` and
``track_temporal(features, search_crop, previous) -> (cls, reg, xf)``: ``previous`` holds
earlier frames' un-shifted search features, oldest first, as ``xf`` returned them (the
tracker keeps them, as it keeps the template features); missing neighbours are filled as
``neighbour_features`` says. Its plain ``track`` is the run with no earlier frame. Backends
of other models have ``temporal = 0`` (or no such attribute) and no ``track_temporal``.

A model with a learned template-fusion graph (manifest role 'fusion') adds one call, run only
when the template is updated: ``fuse_templates(initial, memory)`` gives the template features
the search graph takes, from the initial template's features and the N latest template
samples. Every built-in backend has it and says with ``has_fusion`` whether the model has the
graph; calling it without one raises BackendError. A plugin backend without it is a backend
without fusion (``runs_fusion``).
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable, Sequence, Tuple

import numpy as np

Features = Tuple[np.ndarray, ...]


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing runtime, bad model, device problem)."""


@runtime_checkable
class Backend(Protocol):
    """Inference backend interface."""

    name: str
    device: str

    def encode_template(self, crop: np.ndarray) -> Features:
        """Template crop (1, 3, Z, Z) float32 -> template features (tuple of NCHW arrays)."""

    def track(self, features: Sequence[np.ndarray],
              search_crop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Features + search crop (1, 3, X, X) -> (cls, reg) float32 NCHW maps."""


class TemplateFusion(Protocol):
    """The optional template-fusion call of a backend (see the module docstring)."""

    has_fusion: bool

    def fuse_templates(self, initial: Features, memory: Sequence[Features]) -> Features:
        """Fuse the initial features with the N latest samples' features (oldest first)."""


def runs_fusion(backend) -> bool:
    """Return True when ``backend`` runs a learned template-fusion graph."""
    return bool(getattr(backend, 'has_fusion', False))


def no_fusion_error(model: str) -> BackendError:
    """Return the error of ``fuse_templates`` on a model without a fusion graph."""
    return BackendError(f'model {model} has no template-fusion graph (manifest role '
                        '"fusion"); export one with `siam-model export ... --modules '
                        'modules.pth`, or do not call fuse_templates (check has_fusion)')


def fusion_feeds(initial: Features, memory: Sequence[Features],
                 slots: int) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return the fusion graph's inputs: zf_initial (1, C, h, w) and zf_memory (1, N, C, h, w).

    ``initial`` and every entry of ``memory`` (exactly ``slots`` of them, oldest first) are
    one-tensor template features of the same shape; BackendError otherwise.
    """
    initial = as_features(initial)
    if len(initial) != 1 or initial[0].ndim != 4 or initial[0].shape[0] != 1:
        raise BackendError(f'template fusion takes one (1, C, h, w) feature tensor, got '
                           f'{[f.shape for f in initial]}')
    if len(memory) != slots:
        raise BackendError(f'the fusion graph takes {slots} memory slots, got {len(memory)}')
    stacked = []
    for sample in memory:
        sample = as_features(sample)
        if len(sample) != 1 or sample[0].shape != initial[0].shape:
            raise BackendError(f'template fusion memory entries must match the initial '
                               f'features {initial[0].shape}, got {[f.shape for f in sample]}')
        stacked.append(sample[0])
    return initial[0], np.ascontiguousarray(np.stack(stacked, axis=1))


def as_features(arrays) -> Features:
    """Normalise one array or a sequence of arrays to a tuple of contiguous float32 arrays."""
    if isinstance(arrays, np.ndarray):
        arrays = (arrays,)
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)


def neighbour_features(previous: Sequence[np.ndarray], frames: int) -> Optional[Features]:
    """
    Return the graph's previous-frame inputs (t-1 first) from earlier features, oldest first.

    Training's rule (``nets.modules.tafa.TemporalShift``): a neighbour that does not exist
    stands in by the nearest available one (t-2 by t-1); with none at all, frame t stands in
    for both, which the caller fills in with frame t's own features (None is returned).
    Only the last ``frames`` entries are used.
    """
    recent = list(previous)[::-1][:frames]
    if not recent:
        return None
    while len(recent) < frames:
        recent.append(recent[-1])
    return as_features(recent)
