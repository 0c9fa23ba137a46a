"""
OpenCV's own trackers behind the project's ``init`` / ``update`` -> ``TrackResult`` interface.

Peers are named ``opencv-nano`` (TrackerNano with a NanoTrack v1/v2 ONNX folder),
``opencv-mil`` (TrackerMIL), ``opencv-csrt`` and ``opencv-kcf`` (contrib). OpenCV trackers take
integer rectangles; the float initial box is rounded. When OpenCV reports failure it returns an
empty rectangle, so the wrapper keeps the last box it had and reports ``LOST``: what a user of
the tracker would still see, as the project's tracker does. TrackerMIL samples at random
from an RNG that ``cv2.setRNGSeed`` does not reach, so its figures vary a little run to run.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from siam_tracker_ros.core.types import BBox, TrackResult, TrackState

NANO_BACKBONE = 'nanotrack_backbone_sim.onnx'
NANO_HEAD = 'nanotrack_head_sim.onnx'


class PeerUnavailable(RuntimeError):
    """A peer tracker cannot be built here (missing OpenCV class or model files)."""


def to_cv_rect(box: BBox) -> Tuple[int, int, int, int]:
    """Round a float x, y, w, h box to the integer rectangle OpenCV trackers accept."""
    x, y = int(round(box.x)), int(round(box.y))
    w = max(1, int(round(box.x + box.w)) - x)
    h = max(1, int(round(box.y + box.h)) - y)
    return x, y, w, h


class OpenCVPeer:
    """
    Wrap a ``cv2.Tracker`` so it answers like the project's tracker.

    ``score`` is ``getTrackingScore()`` where the tracker implements it (OpenCV returns -1
    where it does not; that becomes NaN); ``confidence`` is that score clipped to [0, 1]
    when there is one, else 1.0 / 0.0 from OpenCV's ok flag.
    """

    def __init__(self, name: str, create: Callable[[], object], has_score: bool = False):
        """Remember how to build the OpenCV tracker; it is created on every ``init``."""
        self.name = name
        self._create = create
        self._has_score = has_score
        self._tracker = None
        self._last: Optional[BBox] = None

    def init(self, image: np.ndarray, box: BBox) -> TrackResult:
        """Start tracking ``box`` in ``image`` (BGR uint8), dropping any previous target."""
        if not box.is_finite() or box.w <= 0 or box.h <= 0:
            raise ValueError(f'{self.name}: cannot start from box {box.as_tuple()}')
        self._tracker = self._create()
        self._tracker.init(image, to_cv_rect(box))
        self._last = box
        return TrackResult(box=box, score=float('nan'), state=TrackState.TRACKING,
                           confidence=1.0)

    def update(self, image: np.ndarray) -> TrackResult:
        """Track into ``image``; before ``init`` this is an error."""
        if self._tracker is None:
            raise RuntimeError(f'{self.name}: update() before init()')
        ok, rect = self._tracker.update(image)
        ok = bool(ok)
        x, y, w, h = (float(v) for v in rect)
        if ok and w > 0 and h > 0:
            self._last = BBox(x, y, w, h)
        else:
            ok = False
        score = float('nan')
        if self._has_score:
            raw = float(self._tracker.getTrackingScore())
            if raw >= 0:
                score = raw
        if math.isnan(score):
            confidence = 1.0 if ok else 0.0
        else:
            confidence = min(max(score, 0.0), 1.0)
        return TrackResult(box=self._last, score=score,
                           state=TrackState.TRACKING if ok else TrackState.LOST,
                           confidence=confidence)


@contextlib.contextmanager
def _quiet_opencv():
    """
    Hide OpenCV's warnings for a moment.

    TrackerNano warns about dnn targets on every creation in OpenCV 5, which says nothing about
    tracking.
    """
    log = getattr(getattr(cv2, 'utils', None), 'logging', None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)


def _need(attr: str, hint: str):
    cls = getattr(cv2, attr, None)
    if cls is None or not hasattr(cls, 'create'):
        raise PeerUnavailable(f'cv2.{attr} is missing in OpenCV {cv2.__version__}; {hint}')
    return cls


_CONTRIB = 'install opencv-contrib-python(-headless) for the contrib trackers'


def _make_mil(model_dir: Optional[str]) -> OpenCVPeer:
    cls = _need('TrackerMIL', 'use an OpenCV build with the video module')
    return OpenCVPeer('opencv-mil', cls.create)


def _make_csrt(model_dir: Optional[str]) -> OpenCVPeer:
    cls = _need('TrackerCSRT', _CONTRIB)
    return OpenCVPeer('opencv-csrt', cls.create)


def _make_kcf(model_dir: Optional[str]) -> OpenCVPeer:
    cls = _need('TrackerKCF', _CONTRIB)
    return OpenCVPeer('opencv-kcf', cls.create)


def nano_model_files(model_dir: Optional[str]) -> Tuple[Path, Path]:
    """Find the backbone and head ONNX files TrackerNano needs in a NanoTrack v1/v2 folder."""
    if not model_dir:
        raise PeerUnavailable('opencv-nano needs a NanoTrack v1/v2 folder with '
                              f'{NANO_BACKBONE} and {NANO_HEAD}; pass --peer-model DIR')
    folder = Path(model_dir)
    backbone, head = folder / NANO_BACKBONE, folder / NANO_HEAD
    missing = [p.name for p in (backbone, head) if not p.is_file()]
    if missing:
        raise PeerUnavailable(f'opencv-nano: {folder} lacks {", ".join(missing)} (TrackerNano '
                              'runs the NanoTrack v1/v2 backbone + head ONNX pair; not v3)')
    return backbone, head


def _make_nano(model_dir: Optional[str]) -> OpenCVPeer:
    cls = _need('TrackerNano', 'use OpenCV >= 4.7 with the dnn module')
    params_cls = getattr(cv2, 'TrackerNano_Params', None)
    if params_cls is None:
        raise PeerUnavailable(f'cv2.TrackerNano_Params is missing in OpenCV {cv2.__version__}')
    backbone, head = nano_model_files(model_dir)

    def create():
        params = params_cls()
        params.backbone = str(backbone)
        params.neckhead = str(head)
        with _quiet_opencv():
            return cls.create(params)

    try:
        create()
    except cv2.error as exc:
        raise PeerUnavailable(f'opencv-nano cannot load {model_dir}: {exc}') from None
    return OpenCVPeer('opencv-nano', create, has_score=True)


PEERS: Dict[str, Callable[[Optional[str]], OpenCVPeer]] = {
    'opencv-nano': _make_nano,
    'opencv-mil': _make_mil,
    'opencv-csrt': _make_csrt,
    'opencv-kcf': _make_kcf,
}

#: Peers that run a model folder (``--peer-model`` or ``KIND@DIR``).
MODEL_PEERS = frozenset({'opencv-nano'})


def parse_peer_spec(spec: str, default_model: Optional[str] = None
                    ) -> Tuple[str, str, Optional[str]]:
    """
    Split a peer spec into (display name, kind, model folder).

    ``KIND`` uses ``default_model``; ``KIND@DIR`` uses DIR and is named ``KIND@<DIR's name>``
    so two NanoTrack versions can run side by side. Peers without a model get None.
    """
    spec = spec.strip()
    kind, sep, model = spec.partition('@')
    if kind not in PEERS:
        raise ValueError(f'unknown peer {kind!r}; choose from {", ".join(PEERS)}')
    if kind not in MODEL_PEERS:
        if sep:
            raise ValueError(f'peer {kind} takes no model folder ({spec!r})')
        return kind, kind, None
    if sep:
        if not model:
            raise ValueError(f'peer spec {spec!r} has an empty folder after @')
        return f'{kind}@{Path(model).name or model}', kind, model
    return kind, kind, default_model


def create_peer(kind: str, model_dir: Optional[str] = None, name: Optional[str] = None
                ) -> OpenCVPeer:
    """Build a peer tracker by kind; raises PeerUnavailable with the reason when it cannot."""
    if kind not in PEERS:
        raise ValueError(f'unknown peer {kind!r}; choose from {", ".join(PEERS)}')
    peer = PEERS[kind](model_dir)
    if name:
        peer.name = name
    return peer
