"""
Run tracker_node fed by a publisher process over real DDS and measure it (siam-bench --node).

One run: the tracker node and a publisher (``video_publisher``, or the minimal publisher of
``tooling.minimal_publisher``) start as processes on a private ROS_DOMAIN_ID with
localhost-only discovery and the chosen DDS profile. A first publisher process sends frames
until this process has set the target (~/set_target) on one; then a second one publishes
``frames`` frames at ``rate`` Hz, looping over a short clip. This process records the
TrackedObjects and the node's diagnostics (it subscribes to no image, so it adds no image
traffic) and samples the node's resident memory, open file descriptors and CPU time from
/proc. Figures:

- published: frames of the measured run (the publisher's own count);
- processed: frames of the measured run with a TrackedObject; received / missed / skipped:
  the node's diagnostics over the run (missed = publisher sequence gaps: lost before the node);
- latency: image header stamp -> TrackedObject received here (p50/p99/mean/max);
- stages_ms: the node's per-stage latency (diagnostics keys ``latency_<stage>_ms_p50/p99``,
  over its last frames);
- samples / memory: RSS and fd count of the node process over time, growth after a warm-up.

Fast DDS reads its profile once per process, so every run of one invocation shares this
process's (small) participant profile; the node and the publisher start afresh each run.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import dds_profile, isolation

NAMESPACE = '/siam_bench'
PRIME_SECONDS = 60  # at most, of priming frames before the target is set
PUBLISHERS = ('video', 'minimal')
TRANSPORTS = ('raw', 'compressed')
PUBLISHED_LINE = re.compile(r'published (\d+) frames in ([0-9.]+) s \(([0-9.]+) Hz\)')
_DIAG_INT_KEYS = ('frames_received', 'frames_processed', 'frames_missed', 'frames_skipped',
                  'frames_rejected')


class BenchError(RuntimeError):
    """A node run could not be carried out (the reason says what to do)."""


@dataclasses.dataclass
class RunConfig:
    """One measured run."""

    model: str
    clip: Path
    box: Tuple[float, float, float, float]
    size: Tuple[int, int]
    frames: int
    rate: float = 30.0
    transport: str = 'raw'
    profile: str = dds_profile.LARGE_IMAGES
    publisher: str = 'video'
    backend: str = 'auto'
    device: str = 'cpu'
    sample_period: float = 1.0
    load_timeout: float = 120.0
    log_dir: Optional[Path] = None

    def label(self) -> str:
        """Short name of the run: 1280x720 raw video large_images."""
        known = (dds_profile.LARGE_IMAGES, dds_profile.NONE)
        profile = self.profile if self.profile in known else Path(self.profile).name
        return f'{self.size[0]}x{self.size[1]} {self.transport} {self.publisher} {profile}'


# --- clips ---------------------------------------------------------------------------------

def write_bench_clip(out: Path, size: Tuple[int, int], frames: int = 40,
                     video: Optional[str] = None, gt: Optional[str] = None,
                     box: Optional[Sequence[float]] = None
                     ) -> Tuple[Path, Tuple[float, float, float, float]]:
    """
    Write a clip of ``size`` for the bench and return (clip, target box on frame 0).

    ``frames`` frames forward then backward (a loop without a jump, so the tracker keeps the
    target however long the run), from a generated moving-target sequence or from the first
    frames of ``video`` resized (its box from ``box`` or the first row of ``gt``, scaled).
    """
    import cv2

    width, height = size
    if frames < 2:
        raise BenchError('the bench clip needs at least 2 frames')
    if video:
        from ..io.frame_source import FrameSource
        source = FrameSource(video, gt)
        if box is None:
            if source.groundtruth is None or np.isnan(source.groundtruth[0]).any():
                raise BenchError(f'give the target box on the first frame of {video} (or a '
                                 'ground-truth file)')
            box = source.groundtruth[0]
        sx, sy = width / source.width, height / source.height
        x, y, w, h = (float(v) for v in box)
        first_box = (x * sx, y * sy, w * sx, h * sy)
        images = []
        for image in source.frames():
            images.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
            if len(images) >= frames:
                break
    else:
        from ..eval.synthetic import generate_frames
        images, first_box = [], None
        # A path of 150 frames, of which the first ``frames``: a steady, trackable motion.
        for image, row in generate_frames(max(150, frames), size):
            images.append(image)
            first_box = first_box or row
            if len(images) >= frames:
                break
    if len(images) < 2:
        raise BenchError(f'{video} has fewer than 2 frames')
    sequence = images + images[-2:0:-1]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'MJPG'), 30.0, (width, height))
    if not writer.isOpened():
        raise BenchError(f'OpenCV cannot write {out}')
    try:
        for image in sequence:
            writer.write(image)
    finally:
        writer.release()
    return out, tuple(float(v) for v in first_box)


# --- /proc ---------------------------------------------------------------------------------

def proc_sample(pid: int) -> Optional[Dict[str, float]]:
    """RSS (MiB), open file descriptors and CPU seconds of process ``pid`` (None if gone)."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
        fds = len(os.listdir(f'/proc/{pid}/fd'))
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None
    match = re.search(r'^VmRSS:\s+(\d+) kB', status, re.MULTILINE)
    ticks = os.sysconf('SC_CLK_TCK')
    return {'rss_mb': int(match.group(1)) / 1024.0 if match else float('nan'),
            'fds': fds, 'cpu_s': (int(fields[11]) + int(fields[12])) / ticks}


def memory_growth(samples: Sequence[Dict[str, float]], warmup_s: float) -> Dict[str, Any]:
    """
    Growth of RSS and fds after ``warmup_s`` seconds of ``samples`` ({'t', 'rss_mb', 'fds'}).

    The reference is the first sample at or after the warm-up; the end is the median of the
    last five samples (one sample can catch a transient allocation). The growth over the second
    half of the samples after the warm-up tells a one-off step from a steady leak.
    """
    after = [s for s in samples if s['t'] >= warmup_s]
    if len(after) < 2:
        return {'warmup_s': warmup_s, 'samples_after_warmup': len(after)}
    start = after[0]
    end_rss = float(np.median([s['rss_mb'] for s in after[-5:]]))
    t = np.array([s['t'] for s in after])
    rss = np.array([s['rss_mb'] for s in after])
    slope = float(np.polyfit(t, rss, 1)[0]) * 3600.0 if np.ptp(t) > 0 else 0.0
    half = after[len(after) // 2]['rss_mb']
    return {'warmup_s': warmup_s, 'samples_after_warmup': len(after),
            'rss_mb_at_warmup': round(start['rss_mb'], 1), 'rss_mb_end': round(end_rss, 1),
            'rss_mb_max': round(float(rss.max()), 1),
            'rss_growth_percent': round((end_rss - start['rss_mb']) / start['rss_mb'] * 100, 2),
            'rss_growth_percent_second_half': round((end_rss - half) / half * 100, 2),
            'rss_trend_mb_per_hour': round(slope, 2),
            'fds_at_warmup': int(start['fds']), 'fds_end': int(after[-1]['fds']),
            'fds_max': int(max(s['fds'] for s in after))}


# --- the run -------------------------------------------------------------------------------

def _stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not len(values):
        return {'p50': None, 'p99': None, 'mean': None, 'max': None}
    arr = np.asarray(values, np.float64)
    return {'p50': round(float(np.percentile(arr, 50)), 2),
            'p99': round(float(np.percentile(arr, 99)), 2),
            'mean': round(float(arr.mean()), 2), 'max': round(float(arr.max()), 2)}


def _as_int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def stage_breakdown(diagnostics: Dict[str, str]) -> Dict[str, Dict[str, float]]:
    """``latency_<stage>_ms_p50/p99`` diagnostics keys as {stage: {'p50', 'p99'}} (ms)."""
    stages: Dict[str, Dict[str, float]] = {}
    for key, value in diagnostics.items():
        match = re.fullmatch(r'latency_(\w+?)_ms_(p50|p99)', key)
        if match:
            try:
                stages.setdefault(match.group(1), {})[match.group(2)] = round(float(value), 2)
            except ValueError:
                continue
    return stages


class _Recorder:
    """TrackedObjects and the latest diagnostics of the node under test."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from siam_tracker_interfaces.msg import TrackedObject
        from siam_tracker_interfaces.srv import SetTarget

        self.tracked: Dict[int, Tuple[int, int]] = {}   # stamp ns -> (received ns, state)
        self.diagnostics: Dict[str, str] = {}
        self.diag_count = 0
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(TrackedObject, f'{NAMESPACE}/siam_tracker/tracked',
                                 self._on_tracked, qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.client = node.create_client(SetTarget, f'{NAMESPACE}/siam_tracker/set_target')

    def _on_tracked(self, msg) -> None:
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        self.tracked.setdefault(stamp, (time.time_ns(), int(msg.state)))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'{NAMESPACE}/siam_tracker'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics['_message'] = status.message
                self.diag_count += 1


def _spin_until(executor, done: Callable[[], bool], timeout: float,
                check: Optional[Callable[[], None]] = None) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        if check is not None:
            check()
        executor.spin_once(timeout_sec=0.05)
    return True


def _wait_quiet(executor, rec: _Recorder, quiet_s: float = 0.5, limit_s: float = 10.0) -> None:
    """Spin until no TrackedObject has come for ``quiet_s`` (at most ``limit_s``)."""
    start = last = time.monotonic()
    count = len(rec.tracked)
    while time.monotonic() - last < quiet_s and time.monotonic() - start < limit_s:
        executor.spin_once(timeout_sec=0.05)
        if len(rec.tracked) != count:
            count, last = len(rec.tracked), time.monotonic()


def _python_cmd(module: str, *args: str) -> List[str]:
    return [sys.executable, '-m', module, *args]


def _publisher_cmd(cfg: RunConfig, count: int) -> List[str]:
    if cfg.publisher == 'minimal':
        return _python_cmd('siam_tracker_ros.tooling.minimal_publisher', '--source',
                           str(cfg.clip), '--count', str(count), '--rate', str(cfg.rate),
                           '--transport', cfg.transport, '--topic',
                           f'{NAMESPACE}/{_image_topic(cfg)}')
    return _python_cmd('siam_tracker_ros.ros.video_publisher', '--ros-args',
                       '-r', f'__ns:={NAMESPACE}', '-p', f'source:={cfg.clip}',
                       '-p', f'rate:={float(cfg.rate)}', '-p', 'loop:=true',
                       '-p', f'max_frames:={count}', '-p', f'image_transport:={cfg.transport}',
                       '-p', 'wait_for_subscribers:=1', '-p', 'linger:=0.0')


def _image_topic(cfg: RunConfig) -> str:
    return 'camera/image_raw/compressed' if cfg.transport == 'compressed' else 'camera/image_raw'


def _published(log_path: Path) -> Tuple[Optional[int], Optional[float]]:
    text = log_path.read_text(errors='replace') if log_path.is_file() else ''
    found = PUBLISHED_LINE.findall(text)
    if not found:
        return None, None
    count, _, rate = found[-1]
    return int(count), float(rate)


def run_node(cfg: RunConfig, domain_id: int, log: Callable[[str], None] = print,
             progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Carry out one run (see the module docstring); return its figures."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from siam_tracker_interfaces.srv import SetTarget

    if cfg.publisher not in PUBLISHERS:
        raise BenchError(f'publisher {cfg.publisher!r} is not one of {", ".join(PUBLISHERS)}')
    if cfg.transport not in TRANSPORTS:
        raise BenchError(f'transport {cfg.transport!r} is not one of {", ".join(TRANSPORTS)}')
    env = dds_profile.apply_profile(isolation.isolated_env(domain_id), cfg.profile)
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOCALHOST_ONLY',
                *dds_profile.ENV_VARS):
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    log_dir = Path(cfg.log_dir) if cfg.log_dir else Path(tempfile.mkdtemp(prefix='siam_bench_'))
    log_dir.mkdir(parents=True, exist_ok=True)
    image_topic = f'{NAMESPACE}/{_image_topic(cfg)}'
    tracker_cmd = _python_cmd(
        'siam_tracker_ros.ros.tracker_node', '--ros-args', '-r', f'__ns:={NAMESPACE}',
        '-r', f'image:={image_topic}', '-r', f'camera_info:={NAMESPACE}/camera/camera_info',
        '-p', f'model_path:={cfg.model}', '-p', f'backend:={cfg.backend}',
        '-p', f'device:={cfg.device}', '-p', f'image_transport:={cfg.transport}',
        # The publisher pauses between the priming frame and the run: no "camera gone" LOST.
        '-p', 'image_timeout:=60.0')
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('siam_bench_recorder', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    rec = _Recorder(node)
    tracker = None
    publisher = None

    def check_tracker() -> None:
        if tracker.poll() is not None:
            raise BenchError(f'the tracker node exited with code {tracker.returncode}; see '
                             f'{log_dir / "tracker.log"}')
    try:
        tracker = isolation.start_process(tracker_cmd, env, log_dir / 'tracker.log')
        if not _spin_until(executor, lambda: rec.diagnostics.get('model_state') in (
                'ready', 'failed'), cfg.load_timeout, check_tracker):
            raise BenchError(f'the tracker did not load {cfg.model} within '
                             f'{cfg.load_timeout:.0f} s; see {log_dir / "tracker.log"}')
        if rec.diagnostics['model_state'] == 'failed':
            raise BenchError(f'the tracker cannot load the model: {rec.diagnostics["_message"]}')
        if not _spin_until(executor, rec.client.service_is_ready, 30.0, check_tracker):
            raise BenchError('the set_target service did not appear')
        # 1. The target, set on the newest frame of a priming publisher (asked again until a
        #    frame has reached the node: without the profile most large frames are lost).
        request = SetTarget.Request()
        request.box.x, request.box.y, request.box.width, request.box.height = cfg.box
        response = None
        prime = isolation.start_process(_publisher_cmd(cfg, int(cfg.rate * PRIME_SECONDS)),
                                        env, log_dir / 'prime.log')
        try:
            while prime.poll() is None and not (response is not None and response.success):
                future = rec.client.call_async(request)
                _spin_until(executor, future.done, 10.0, check_tracker)
                response = future.result() if future.done() else None
                _spin_until(executor, lambda: False, 0.3)
        finally:
            isolation.stop_process(prime)
        if response is None or not response.success:
            raise BenchError(f'set_target failed for {PRIME_SECONDS} s: '
                             + (response.message if response else 'no answer'))
        _wait_quiet(executor, rec)    # the priming frames still in flight
        count = rec.diag_count
        _spin_until(executor, lambda: rec.diag_count > count, 3.0, check_tracker)
        before = dict(rec.diagnostics)
        # 2. The measured run: its frames are stamped after this.
        log(f'  {cfg.label()}: target set; publishing {cfg.frames} frames at {cfg.rate:g} Hz')
        run_start_ns = time.time_ns()
        started = time.monotonic()
        publisher = isolation.start_process(_publisher_cmd(cfg, cfg.frames), env,
                                            log_dir / 'publisher.log')
        samples: List[Dict[str, float]] = []
        first = proc_sample(tracker.pid)
        pub_first = pub_last = proc_sample(publisher.pid)
        next_sample = time.monotonic()
        while publisher.poll() is None:
            check_tracker()
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + cfg.sample_period
                sample = proc_sample(tracker.pid)
                if sample is not None:
                    sample['t'] = round(now - started, 2)
                    sample['tracked'] = len(rec.tracked)
                    samples.append(sample)
                    pub_last = proc_sample(publisher.pid) or pub_last
                    if progress is not None:
                        progress(sample)
        elapsed = time.monotonic() - started
        # The last frames are in flight: wait for their answers, then one more diagnostics.
        _wait_quiet(executor, rec, 1.0)
        count = rec.diag_count
        _spin_until(executor, lambda: rec.diag_count > count, 3.0)
        after = dict(rec.diagnostics)
        last = proc_sample(tracker.pid)
    finally:
        codes = {}
        for name, proc in (('publisher', publisher), ('tracker', tracker)):
            if proc is not None:
                codes[name] = isolation.stop_process(proc)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    published, pub_rate = _published(log_dir / 'publisher.log')
    if published is None:
        raise BenchError('the publisher did not report its count; see '
                         f'{log_dir / "publisher.log"}')
    stamps = sorted(s for s in rec.tracked if s > run_start_ns)
    latencies = [(rec.tracked[s][0] - s) / 1e6 for s in stamps]

    def delta(key: str) -> Optional[int]:
        a, b = _as_int(before.get(key)), _as_int(after.get(key))
        return None if a is None or b is None else b - a
    cpu = {}
    if first and last and elapsed > 0:
        cpu['node_percent'] = round((last['cpu_s'] - first['cpu_s']) / elapsed * 100, 1)
    if pub_first and pub_last and elapsed > 0:
        cpu['publisher_percent'] = round(
            (pub_last['cpu_s'] - pub_first['cpu_s']) / elapsed * 100, 1)
    result: Dict[str, Any] = {
        'label': cfg.label(),
        'config': {'size': f'{cfg.size[0]}x{cfg.size[1]}', 'rate_hz': cfg.rate,
                   'frames': cfg.frames, 'transport': cfg.transport, 'publisher': cfg.publisher,
                   'dds_profile': cfg.profile, 'model': cfg.model, 'backend': cfg.backend,
                   'device': cfg.device},
        'seconds': round(elapsed, 1),
        'published': published,
        'publish_rate_hz': pub_rate,
        'processed': len(stamps),
        'processed_ratio': round(len(stamps) / published, 4) if published else None,
        'received_by_node': delta('frames_received'),
        'processed_by_node': delta('frames_processed'),
        'missed_before_node': delta('frames_missed'),
        'skipped_in_node': delta('frames_skipped'),
        'rejected': delta('frames_rejected'),
        'latency_ms': _stats(latencies),
        'node_latency_ms': {k: _as_float(after.get(f'latency_ms_{k}')) for k in ('p50', 'p99')},
        'node_processing_ms_p50': _as_float(after.get('processing_ms_p50')),
        'stages_ms': stage_breakdown(after),
        'states': {str(state): sum(1 for s in stamps if rec.tracked[s][1] == state)
                   for state in sorted({rec.tracked[s][1] for s in stamps})},
        'cpu': cpu,
        'node_backend': after.get('backend'),
        'node_last_error': after.get('last_error') or None,
        'exit_codes': codes,
        'samples': samples,
        'logs': str(log_dir),
    }
    return result


def _as_float(value: Any) -> Optional[float]:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None


def format_run(result: Dict[str, Any]) -> str:
    """One human line (+ the stage line) for a run's figures."""
    lat = result['latency_ms']
    ratio = result['processed_ratio']
    text = (f'{result["label"]:<36} published {result["published"]} '
            f'({result["publish_rate_hz"]} Hz), received {result["received_by_node"]}, '
            f'processed {result["processed"]} ({ratio * 100:.1f}%), missed before the node '
            f'{result["missed_before_node"]}, skipped {result["skipped_in_node"]}; '
            f'latency p50 {lat["p50"]} ms, p99 {lat["p99"]} ms; cpu node '
            f'{result["cpu"].get("node_percent")}%, publisher '
            f'{result["cpu"].get("publisher_percent")}%')
    stages = result['stages_ms']
    if stages:
        text += '\n    stages p50/p99 ms: ' + ', '.join(
            f'{name} {v.get("p50")}/{v.get("p99")}' for name, v in stages.items())
    return text
