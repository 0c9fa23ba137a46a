"""
Template update on the template features (the tracker owns them; backends hold no state).

Confidence-gated moving average (SiamMargin), with the initial template always in the mix
(DASTSiam): the accumulated template is ``z_t = (1 - a) z_{t-1} + a f(box_t)``, updated only on
confident frames with no look-alike in the target's template window whose new sample still
resembles the initial template (cosine similarity of the features), and the tracker matches
with ``w0 * z_0 + (1 - w0) * z_t``. A sample costs one template-branch run (the tracker reuses
the appearance check's, which runs on every frame that may sample), so it is taken at most every
``update_interval`` frames.

With a learned template fusion (DASTSiam ST, a model whose backend runs a fusion graph) the
same gated samples go into a FIFO memory of N slots instead, and the tracker matches with
``fuse(z_0, memory)``: slots not filled yet hold ``z_0`` (as in training and
``nets.fusion_export``), so from the first frame on the template is the fused one. The moving
average's ``rate`` and ``init_weight`` do not apply; ``interval`` > 0 switches it on.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np

Features = Tuple[np.ndarray, ...]
# (initial features, N memory samples oldest first) -> fused features: a backend's
# fuse_templates.
Fuse = Callable[[Features, Sequence[Features]], Features]


def flat(features: Features) -> np.ndarray:
    """Return a feature tuple as one float64 vector."""
    return np.concatenate([x.ravel() for x in features]).astype(np.float64)


def cosine(a: Features, b: Features) -> float:
    """Cosine similarity of two feature tuples, flattened together."""
    va = flat(a)
    return cosine_flat(va, np.linalg.norm(va), flat(b))


def cosine_flat(va: np.ndarray, norm_a: float, vb: np.ndarray) -> float:
    """Cosine similarity of two flat vectors, the first with its norm (kept by the caller)."""
    denom = norm_a * np.linalg.norm(vb)
    return float(va @ vb / denom) if denom > 0 else 0.0


class TemplateUpdater:
    """Holds the initial and the accumulated template; gives the template to match with."""

    def __init__(self, config, fuse: Optional[Fuse] = None, slots: int = 0):
        """
        Read an UpdateConfig.

        ``fuse`` (with ``slots`` >= 1, the fusion graph's memory size N) replaces the moving
        average by the learned template fusion.
        """
        if fuse is not None and slots < 1:
            raise ValueError(f'a template fusion needs >= 1 memory slot, got {slots}')
        self.fuse = fuse
        self.slots = int(slots) if fuse is not None else 0
        self.memory: Deque[Features] = deque(maxlen=max(self.slots, 1))
        self.initial: Features = ()
        self._initial_flat = np.zeros(0)
        self._initial_norm = 0.0
        self.accumulated: Features = ()
        self.current: Features = ()
        self.updates = 0
        self.last_agreement: Optional[float] = None
        self.set_config(config)

    def set_config(self, config) -> None:
        """Take new settings (run-time change)."""
        self.interval = config.interval
        self.rate = config.rate
        self.init_weight = config.init_weight
        self.min_confidence = config.min_confidence
        self.min_agreement = config.min_agreement
        if self.fuse is not None:
            if self.initial and self.fusing != (self.current is not self.initial):
                self._refresh()
        elif self.updates:
            self._mix()

    @property
    def enabled(self) -> bool:
        """Return True when updates are taken at all."""
        if self.fuse is not None:
            return self.interval > 0
        return self.interval > 0 and self.rate > 0 and self.init_weight < 1

    @property
    def fusing(self) -> bool:
        """Return True when the template in use is the learned fusion's."""
        return self.fuse is not None and self.enabled

    def reset(self, features: Features) -> None:
        """Start from the initial template."""
        self.initial = tuple(np.asarray(f, dtype=np.float32) for f in features)
        self._initial_flat = flat(self.initial)
        self._initial_norm = float(np.linalg.norm(self._initial_flat))
        self.accumulated = self.initial
        self.current = self.initial
        self.memory.clear()
        self.updates = 0
        self.last_agreement = None
        if self.fusing:
            self._refresh()

    def memory_slots(self) -> List[Features]:
        """Return the fusion memory, oldest first, unfilled slots holding the initial features."""
        return [self.initial] * (self.slots - len(self.memory)) + list(self.memory)

    def _refresh(self) -> None:
        """Recompute the fused template (or fall back to the initial one when off)."""
        if self.fusing:
            self.current = tuple(np.ascontiguousarray(f, dtype=np.float32)
                                 for f in self.fuse(self.initial, self.memory_slots()))
        else:
            self.current = self.initial

    def sampling(self, frame: int) -> bool:
        """Whether ``frame`` is one the update samples, if it is confident and clean."""
        return self.enabled and frame % self.interval == 0

    def due(self, frame: int, confidence: float, clean: bool) -> bool:
        """
        Whether this frame should be sampled (the caller then encodes the box).

        ``clean``: no look-alike reaches into the box's template window.
        """
        return self.sampling(frame) and confidence >= self.min_confidence and clean

    def similarity(self, sample: Features) -> float:
        """Cosine similarity of template features to the initial template."""
        return cosine_flat(self._initial_flat, self._initial_norm, flat(sample))

    def offer(self, sample: Features) -> bool:
        """Fold in a new template sample if it agrees with the initial template."""
        sample = tuple(np.asarray(f, dtype=np.float32) for f in sample)
        self.last_agreement = self.similarity(sample)
        if self.last_agreement < self.min_agreement:
            return False
        if self.fuse is not None:
            self.memory.append(sample)
            self.updates += 1
            self._refresh()
            return True
        a = np.float32(self.rate)
        self.accumulated = tuple((1 - a) * z + a * f for z, f in zip(self.accumulated, sample))
        self.updates += 1
        self._mix()
        return True

    def _mix(self) -> None:
        w = np.float32(self.init_weight)
        self.current = tuple(np.ascontiguousarray(w * z0 + (1 - w) * z)
                             for z0, z in zip(self.initial, self.accumulated))

    @property
    def changed(self) -> bool:
        """Return True when the template in use differs from the initial one."""
        return self.updates > 0 or self.current is not self.initial
