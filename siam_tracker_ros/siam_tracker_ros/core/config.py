"""Frozen configuration dataclasses; every default lives here once.

The ROS node declares its parameters from these dataclasses (field metadata carries the
description and the allowed range), and a model manifest overrides the defaults with the values
the weights were tuned with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple


def param(default: Any, description: str, low: Optional[float] = None,
          high: Optional[float] = None, runtime: bool = False):
    """Declare a dataclass field with a description and an optional [low, high] range.

    ``runtime`` marks values that may change while tracking (thresholds), as opposed to
    values that need a new tracker (crop geometry).
    """
    return field(default=default, metadata={
        'description': description, 'low': low, 'high': high, 'runtime': runtime})


@dataclass(frozen=True)
class TrackerConfig:
    """Hyper-parameters of the Siamese tracker (SiamRPN++/NanoTrack conventions)."""

    exemplar_size: int = param(127, 'template crop side in pixels', 32, 512)
    instance_size: int = param(255, 'search crop side in pixels', 64, 1024)
    context_amount: float = param(0.5, 'context added around the target: (w + h) * amount',
                                  0.0, 2.0)
    penalty_k: float = param(0.15, 'scale / aspect-ratio change penalty strength', 0.0, 1.0,
                             runtime=True)
    window_influence: float = param(0.49, 'weight of the cosine window against the score',
                                    0.0, 1.0, runtime=True)
    lr: float = param(0.385, 'size smoothing rate (scaled by the penalised score)', 0.0, 1.0,
                      runtime=True)
    min_size: float = param(10.0, 'smallest box side in pixels after clipping', 1.0, 100.0)
    found_threshold: float = param(
        0.3, 'confidence at or above which the target counts as found', 0.0, 1.0, runtime=True)

    def replace(self, **changes: Any) -> 'TrackerConfig':
        """Return a copy with some fields changed (validated)."""
        return validated(dataclasses.replace(self, **changes))


def validated(config):
    """Check every field of a config dataclass against its declared range; return it."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        low, high = f.metadata.get('low'), f.metadata.get('high')
        if low is not None and value < low or high is not None and value > high:
            raise ValueError(f'{type(config).__name__}.{f.name}={value!r} is outside '
                             f'[{low}, {high}]')
    return config


def from_mapping(cls, values: Mapping[str, Any], base=None):
    """Build config ``cls`` from a mapping, ignoring keys that are not fields of it."""
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in values.items() if k in names}
    start = base if base is not None else cls()
    return validated(dataclasses.replace(start, **known))


def describe(cls) -> Tuple[Tuple[str, Any, str, Optional[float], Optional[float], bool], ...]:
    """(name, default, description, low, high, runtime) for every field of a config class."""
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        out.append((f.name, f.default, m.get('description', ''), m.get('low'), m.get('high'),
                    bool(m.get('runtime'))))
    return tuple(out)
