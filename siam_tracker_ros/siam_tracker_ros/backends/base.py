"""
The one small interface every inference backend implements.

A backend holds no template state: ``encode_template`` turns a template crop into features,
``track`` runs a search crop through the head with the features it is given. The tracker owns
the features, so template update is plain numpy and every backend shares one decoder.
All arrays are float32 NCHW with batch 1; crops are raw pixels in the model's channel order
(normalisation, if any, is the backend's job, from the model spec).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable, Sequence, Tuple

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
