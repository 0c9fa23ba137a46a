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
