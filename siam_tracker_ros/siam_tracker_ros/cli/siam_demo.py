"""
siam-demo: video publisher -> tracker node -> recorder through real ROS topics.

    siam-demo --video PATH [--gt FILE | --box X,Y,W,H] [--model MODEL] --json OUT
              [--out-video OUT.mp4] [--rate HZ | --lockstep]
    siam-demo --generate [CLIP.mp4] [--json OUT]  # write a synthetic clip + exact ground
                                                   # truth (with --json, run the demo on it)
    siam-demo --soak N [--size WxH] [--rate HZ] [--json OUT]   # N frames; RSS and fds of the
                                                                # node, growth after warm-up

The tracker node and the video publisher run as separate processes on a private
ROS_DOMAIN_ID with localhost-only discovery (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, or
ROS_LOCALHOST_ONLY=1 where ROS_DISTRO is Humble); this process records the images
and the TrackedObjects, sets the target through ~/set_target on the first frame (its stamp and
the first ground-truth box, or --box) and writes per-frame results plus a summary:
``{"frames", "processed", "dropped", "mean_iou", "latency_ms": {"p50", "p99"}, ...}``, latency
being image published (its header stamp) -> TrackedObject received.

Every process uses the DDS profile of ``--dds-profile`` (default large_images:
config/fastdds_large_images.xml; none: Fast DDS's defaults). The JSON's ``stages_ms`` is the
node's per-stage latency from its diagnostics.

``--soak N`` runs the node on a generated clip (default 480x360 at 200 Hz) until the
publisher has sent N frames, sampling the node's resident memory and open file descriptors
from /proc, and reports their growth after ``--warmup`` seconds (tooling/node_bench.py).

MODEL is a model directory, an upstream NanoTrack folder or a catalogue name
(default nanotrack-v3), fetched into --models-dir when absent ($SIAM_MODEL_MIRROR names a
folder or URL mirror for machines without internet).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

DEFAULT_MODEL = 'nanotrack-v3'
NAMESPACE = '/siam_demo'


class DemoError(RuntimeError):
    """The demo cannot run (bad input, node failure, refused target)."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of siam-demo."""
    parser = argparse.ArgumentParser(
        prog='siam-demo', description='Run video publisher -> tracker node -> recorder through '
        'real ROS 2 topics and report accuracy and latency.')
    parser.add_argument('--video', help='video file, image folder or sequence folder')
    parser.add_argument('--gt', help='ground-truth file (x,y,w,h per frame): first box = target, '
                        'mean IoU reported')
    parser.add_argument('--box', help='target box X,Y,W,H on the first frame (without --gt)')
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help='model directory, upstream NanoTrack folder or catalogue name '
                             '(default: %(default)s, fetched when absent)')
    parser.add_argument('--models-dir', help='where catalogue models are fetched to (default: '
                        '$SIAM_MODEL_CACHE/models or ~/.cache/siam_tracker_ros/models)')
    parser.add_argument('--backend', default='auto',
                        help='auto | tensorrt | onnxruntime | torch (default: %(default)s)')
    parser.add_argument('--device', default='cpu', help='cpu | cuda (default: %(default)s)')
    parser.add_argument('--json', help='output JSON (per-frame results and summary)')
    parser.add_argument('--out-video', help='write the video with tracked (green) and '
                        'ground-truth (blue) boxes')
    parser.add_argument('--rate', type=float, default=0.0,
                        help="publication rate in Hz (default: the video's own rate)")
    parser.add_argument('--lockstep', action='store_true',
                        help='publish each frame only after the tracker answered the previous '
                             'one (no drops; latency is then per-frame round trip)')
    parser.add_argument('--generate', metavar='CLIP', nargs='?', const='',
                        help='write a synthetic clip (.mp4/.avi or folder; default '
                             'demo_clip.mp4 beside --json) with exact ground truth; with '
                             '--json, run the demo on it')
    parser.add_argument('--frames', type=int, default=150, help='frames of --generate')
    parser.add_argument('--domain-id', type=int,
                        help='ROS_DOMAIN_ID to use (default: a free private one in 1..101)')
    parser.add_argument('--timeout', type=float, default=60.0,
                        help='seconds to wait for the tracker to load its model')
    parser.add_argument('--dds-profile', default='large_images',
                        help='Fast DDS profile of every process: large_images (shared memory '
                             'for 720p/1080p), none (Fast DDS defaults) or an XML file '
                             '(default: %(default)s)')
    parser.add_argument('--soak', type=int, metavar='N',
                        help='soak test: N frames through the node, its RSS and fds sampled')
    parser.add_argument('--size', default='480x360',
                        help='frame size WxH of --soak (default: %(default)s)')
    parser.add_argument('--warmup', type=float, default=60.0,
                        help='seconds of --soak before the memory reference (default: '
                             '%(default)s)')
    parser.add_argument('--quiet', action='store_true', help='no progress output')
    return parser


# --- model --------------------------------------------------------------------------------

def resolve_model_arg(model: str, models_dir: Optional[str], log=print) -> str:
    """Return a model path for the node: ``model`` itself, or the fetched catalogue model."""
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    from siam_tracker_ros.nets.fetch import CATALOG, MIRROR_ENV, fetch_model

    if model not in CATALOG:
        raise DemoError(f'model {model!r} is neither an existing path nor a catalogue name '
                        f'({", ".join(sorted(CATALOG))})')
    if models_dir:
        root = Path(models_dir).expanduser()
    else:
        from siam_tracker_ros.factory import model_cache_dir
        root = model_cache_dir() / 'models'
    target = root / model
    if not (target / 'manifest.json').is_file():
        mirror = os.environ.get(MIRROR_ENV)
        log(f'fetching {model} into {target}' + (f' from mirror {mirror}' if mirror else ''))
        fetch_model(model, target, mirror=mirror)
    return str(target.resolve())


def parse_box(text: str) -> Tuple[float, float, float, float]:
    """Parse 'X,Y,W,H'."""
    parts = [p for p in text.replace(' ', ',').split(',') if p]
    if len(parts) != 4:
        raise DemoError(f'--box {text!r} is not X,Y,W,H')
    x, y, w, h = (float(p) for p in parts)
    return x, y, w, h


# --- the run ------------------------------------------------------------------------------

class Recorder:
    """In-process node: records image stamps, ground truth and TrackedObjects."""

    def __init__(self, node) -> None:
        """Create the subscriptions and the service client on ``node``."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from siam_tracker_interfaces.msg import GroundTruth, TrackedObject
        from siam_tracker_interfaces.srv import SetTarget

        self.node = node
        self.image_stamps: List[int] = []              # unique stamps in arrival order
        self.frame_of: Dict[int, int] = {}             # stamp ns -> frame index (ground truth)
        self.tracked: Dict[int, Tuple[Any, int]] = {}  # stamp ns -> (msg, received ns)
        self.diagnostics: Dict[str, str] = {}
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, f'{NAMESPACE}/camera/image_raw', self._on_image, qos)
        node.create_subscription(GroundTruth, f'{NAMESPACE}/camera/ground_truth', self._on_gt,
                                 qos)
        node.create_subscription(TrackedObject, f'{NAMESPACE}/siam_tracker/tracked',
                                 self._on_tracked, qos)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.client = node.create_client(SetTarget, f'{NAMESPACE}/siam_tracker/set_target')
        self._seen = set()

    def _on_image(self, msg) -> None:
        from siam_tracker_ros.ros.conversions import stamp_to_ns
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp not in self._seen:  # lockstep may publish a frame twice
            self._seen.add(stamp)
            self.image_stamps.append(stamp)

    def _on_gt(self, msg) -> None:
        from siam_tracker_ros.ros.conversions import stamp_to_ns
        self.frame_of[stamp_to_ns(msg.header.stamp)] = int(msg.frame_index)

    def _on_tracked(self, msg) -> None:
        from siam_tracker_ros.ros.conversions import stamp_to_ns
        self.tracked.setdefault(stamp_to_ns(msg.header.stamp), (msg, time.time_ns()))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'{NAMESPACE}/siam_tracker'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics['_message'] = status.message

    def frame_stamps(self) -> List[Tuple[int, int]]:
        """
        (frame index, stamp) of every frame seen on any topic, in order.

        Stamps increase frame by frame, so the rank of a stamp among all seen is its index;
        ground-truth frame indices, where received, anchor it against frames nobody saw.
        """
        seen = sorted(set(self.image_stamps) | set(self.frame_of) | set(self.tracked))
        out, offset = [], 0
        for rank, stamp in enumerate(seen):
            if stamp in self.frame_of:
                offset = self.frame_of[stamp] - rank
            out.append((rank + offset, stamp))
        return out

    def first_frame(self, with_gt: bool) -> Optional[int]:
        """Stamp of frame 0 once known."""
        if with_gt:
            return next((s for s, i in self.frame_of.items() if i == 0), None)
        return self.image_stamps[0] if self.image_stamps else None


def _spin_until(executor, done, timeout: float, alive=None) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        if alive is not None:
            alive()
        executor.spin_once(timeout_sec=0.05)
    return True


def run_demo(video: str, model: str, gt_path: Optional[str] = None,
             box: Optional[Tuple[float, float, float, float]] = None, backend: str = 'auto',
             device: str = 'cpu', rate: float = 0.0, lockstep: bool = False,
             domain_id: Optional[int] = None, load_timeout: float = 60.0,
             log_dir: Optional[Path] = None, log=print,
             dds_profile: str = 'large_images') -> Dict[str, Any]:
    """Run the pipeline once; return the result record (summary + per-frame rows)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from siam_tracker_ros.eval.metrics import iou
    from siam_tracker_ros.tooling import dds_profile as profiles, isolation
    from siam_tracker_ros.tooling.node_bench import stage_breakdown
    from siam_tracker_ros.ros.conversions import ns_to_stamp
    from siam_tracker_ros.io.frame_source import FrameSource

    source = FrameSource(video, gt_path)
    gt = source.groundtruth
    if box is None:
        if gt is None:
            raise DemoError('give --gt FILE or --box X,Y,W,H for the target')
        if np.isnan(gt[0]).any():
            raise DemoError(f'the first ground-truth row of {gt_path} is NaN; give --box')
        box = tuple(float(v) for v in gt[0])
    lease = None
    if domain_id is None:
        lease = isolation.private_domain()
        domain_id = lease.domain_id
    try:
        env = profiles.apply_profile(isolation.isolated_env(domain_id), dds_profile)
        profiles.apply_profile(os.environ, dds_profile)  # this process's participant too
    except profiles.ProfileError as exc:
        raise DemoError(str(exc)) from None
    os.environ['ROS_DOMAIN_ID'] = env['ROS_DOMAIN_ID']
    isolation.restrict_to_localhost(os.environ)
    log_dir = Path(log_dir) if log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    remaps = ['-r', f'__ns:={NAMESPACE}', '-r', f'image:={NAMESPACE}/camera/image_raw',
              '-r', f'camera_info:={NAMESPACE}/camera/camera_info']
    tracker_cmd = [sys.executable, '-m', 'siam_tracker_ros.ros.tracker_node', '--ros-args',
                   *remaps, '-p', f'model_path:={model}', '-p', f'backend:={backend}',
                   '-p', f'device:={device}',
                   # the clip ends: no camera-outage LOST messages while the results settle
                   '-p', 'image_timeout:=60.0']
    if lockstep:  # every frame must arrive: reliable image subscription
        tracker_cmd += ['-p', 'qos_reliability:=reliable']
    pub_cmd = [sys.executable, '-m', 'siam_tracker_ros.ros.video_publisher', '--ros-args',
               *remaps, '-r', f'ground_truth:={NAMESPACE}/camera/ground_truth',
               '-r', f'tracked:={NAMESPACE}/siam_tracker/tracked',
               '-p', f'source:={Path(video).resolve()}', '-p', f'rate:={float(rate)}',
               '-p', f'lockstep:={"true" if lockstep else "false"}',
               '-p', 'wait_for_subscribers:=2', '-p', 'lockstep_timeout:=10.0']
    procs = []
    rclpy.init(args=None)
    node = rclpy.create_node('siam_demo_recorder', namespace=NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rec = Recorder(node)

    def check_alive():
        for name, proc in procs:
            if name == 'tracker' and proc.poll() is not None:
                raise DemoError(f'the tracker node exited with code {proc.returncode}'
                                + (f'; see {log_dir / "tracker.log"}' if log_dir else ''))
    try:
        log(f'ROS_DOMAIN_ID={domain_id} (localhost only); starting the tracker node on {model}')
        procs.append(('tracker', isolation.start_process(
            tracker_cmd, env, log_dir / 'tracker.log' if log_dir else None)))
        ready = _spin_until(executor, lambda: rec.diagnostics.get('model_state') in (
            'ready', 'failed'), load_timeout, check_alive)
        if not ready:
            raise DemoError(f'the tracker did not load its model within {load_timeout:.0f} s')
        if rec.diagnostics['model_state'] == 'failed':
            raise DemoError(f'the tracker cannot load the model: {rec.diagnostics["_message"]}')
        if not _spin_until(executor, rec.client.service_is_ready, 30.0, check_alive):
            raise DemoError('the set_target service did not appear')
        log(f'model {rec.diagnostics.get("model")} on {rec.diagnostics.get("backend")}; '
            f'publishing {video} ({source.count} frames'
            + (', lockstep)' if lockstep else f' at {rate or source.fps or 30:.1f} Hz)'))
        procs.append(('publisher', isolation.start_process(
            pub_cmd + (['-p', f'groundtruth:={Path(gt_path).resolve()}'] if gt_path else []),
            env, log_dir / 'publisher.log' if log_dir else None)))
        with_gt = gt_path is not None
        if not _spin_until(executor, lambda: rec.first_frame(with_gt) is not None, 30.0,
                           check_alive):
            raise DemoError('no image from the video publisher'
                            + (f'; see {log_dir / "publisher.log"}' if log_dir else ''))
        from siam_tracker_interfaces.srv import SetTarget
        request = SetTarget.Request()
        request.box.x, request.box.y, request.box.width, request.box.height = box
        request.stamp = ns_to_stamp(rec.first_frame(with_gt))
        retry = (SetTarget.Response.NO_IMAGE, SetTarget.Response.STAMP_NOT_FOUND)
        deadline = time.monotonic() + 3.0
        while True:  # the tracker may get frame 0 a moment after this process did
            future = rec.client.call_async(request)
            _spin_until(executor, future.done, 10.0, check_alive)
            response = future.result() if future.done() else None
            if (response is None or response.success or response.code not in retry
                    or time.monotonic() > deadline):
                break
            _spin_until(executor, lambda: False, 0.05)
        if response is None or not response.success:
            raise DemoError('set_target failed: '
                            + (response.message if response is not None else 'no answer'))
        log(f'target {response.target_id} set on frame 0: {response.message}')
        publisher = procs[-1][1]
        last_report = time.monotonic()
        while publisher.poll() is None:
            check_alive()
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() - last_report > 2.0:
                last_report = time.monotonic()
                log(f'  {len(rec.image_stamps)}/{source.count} frames published, '
                    f'{len(rec.tracked)} tracked')
        # The last frames are in flight: wait until they are answered or a second passes.
        settle = time.monotonic()
        while time.monotonic() - settle < 1.0:
            n = len(rec.tracked)
            executor.spin_once(timeout_sec=0.05)
            if len(rec.tracked) != n:
                settle = time.monotonic()
            if rec.image_stamps and rec.image_stamps[-1] in rec.tracked:
                break
        _spin_until(executor, lambda: False, 1.2)  # one more diagnostics period
        if publisher.returncode != 0:
            raise DemoError(f'the video publisher exited with code {publisher.returncode}')
    finally:
        for _, proc in reversed(procs):
            isolation.stop_process(proc)
        node.destroy_node()
        rclpy.try_shutdown()
        if lease is not None:
            lease.release()

    # --- results --------------------------------------------------------------------------
    indexed = dict(rec.frame_stamps())
    frames = max(indexed) + 1 if indexed else 0
    rows = []
    boxes = np.full((frames, 4), np.nan)
    held = np.asarray(box, np.float64)
    latencies = []
    for i in range(frames):
        stamp = indexed.get(i)
        entry = rec.tracked.get(stamp) if stamp is not None else None
        row: Dict[str, Any] = {'frame': i, 'stamp': None if stamp is None else
                               f'{stamp // 10**9}.{stamp % 10**9:09d}'}
        if entry is not None:
            msg, received = entry
            b = msg.box
            held = np.array([b.x, b.y, b.width, b.height], np.float64)
            lat = (received - stamp) / 1e6
            row.update(state=int(msg.state), confidence=round(float(msg.confidence), 4),
                       box=[round(float(v), 2) for v in held], latency_ms=round(lat, 3))
            if i > 0:
                latencies.append(lat)
        else:
            row.update(state=None, box=None, latency_ms=None)
        boxes[i] = held
        rows.append(row)
    processed = sum(1 for r in rows if r['box'] is not None)
    summary: Dict[str, Any] = {
        'video': str(video), 'model': model, 'backend': rec.diagnostics.get('backend'),
        'frames': frames, 'processed': processed, 'dropped': frames - processed,
        'published': int(source.count),
        'lockstep': lockstep,
        'latency_ms': {
            'p50': _round(np.percentile(latencies, 50)) if latencies else None,
            'p99': _round(np.percentile(latencies, 99)) if latencies else None,
            'mean': _round(float(np.mean(latencies))) if latencies else None,
            'max': _round(float(np.max(latencies))) if latencies else None},
        'dds_profile': dds_profile,
        'stages_ms': stage_breakdown(rec.diagnostics),
        'node': {k: v for k, v in rec.diagnostics.items() if not k.startswith('_')},
    }
    if gt is not None:
        n = min(frames, len(gt))
        ious = iou(boxes[:n], gt[:n])
        rows_iou = ious[1:]
        valid = rows_iou[~np.isnan(rows_iou)]
        for i in range(n):
            rows[i]['iou'] = None if math.isnan(ious[i]) else round(float(ious[i]), 4)
        summary['mean_iou'] = _round(float(valid.mean())) if valid.size else None
        summary['iou_ge_0.5'] = _round(float((valid >= 0.5).mean())) if valid.size else None
        summary['gt_frames'] = int(len(gt))
    return {'summary': summary, 'frames': rows, 'boxes': boxes.tolist()}


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def write_video(video: str, record: Dict[str, Any], out: str, gt: Optional[np.ndarray]) -> None:
    """Write ``video`` with the tracked (green) and ground-truth (blue) boxes drawn."""
    import cv2

    from siam_tracker_ros.io.frame_source import FrameSource

    source = FrameSource(video)
    fps = source.fps or 30.0
    writer = None
    try:
        for i, image in enumerate(source.frames()):
            if writer is None:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                         (image.shape[1], image.shape[0]))
            if gt is not None and i < len(gt) and not np.isnan(gt[i]).any():
                x, y, w, h = gt[i]
                cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), (255, 80, 0), 1)
            rows = record['frames']
            if i < len(rows) and i < len(record['boxes']):
                x, y, w, h = record['boxes'][i]
                if not math.isnan(x):
                    cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)),
                                  (0, 220, 0), 2)
            writer.write(image)
    finally:
        if writer is not None:
            writer.release()


def format_summary(summary: Dict[str, Any]) -> str:
    """Human summary of a demo run."""
    lat = summary['latency_ms']
    text = (f'frames {summary["frames"]}, processed {summary["processed"]}, dropped '
            f'{summary["dropped"]}; latency p50 {lat["p50"]} ms, p99 {lat["p99"]} ms')
    if 'mean_iou' in summary:
        text += f'; mean IoU {summary["mean_iou"]} (IoU>=0.5 on {summary["iou_ge_0.5"]})'
    return text


def run_soak(args: argparse.Namespace, model: str, log=print) -> Dict[str, Any]:
    """``--soak N``: N frames through the node; its RSS and fds over time and their growth."""
    from siam_tracker_ros.tooling import isolation, node_bench

    try:
        width, height = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        raise DemoError(f'--size {args.size!r} is not WxH') from None
    work = Path(args.json).with_suffix('') if args.json else Path('soak')
    clip, box = node_bench.write_bench_clip(work / 'soak_clip.avi', (width, height))
    rate = args.rate or 200.0
    cfg = node_bench.RunConfig(model=model, clip=clip, box=box, size=(width, height),
                               frames=args.soak, rate=rate, profile=args.dds_profile,
                               backend=args.backend, device=args.device, sample_period=2.0,
                               log_dir=work / 'logs')
    last_report = [0.0]

    def progress(sample: Dict[str, float]) -> None:
        if sample['t'] - last_report[0] >= 30.0:
            last_report[0] = sample['t']
            log(f'  {sample["t"]:.0f} s: node RSS {sample["rss_mb"]:.1f} MiB, '
                f'{sample["fds"]} fds, {sample["tracked"]} frames tracked')
    lease = isolation.private_domain() if args.domain_id is None else None
    try:
        domain = args.domain_id if lease is None else lease.domain_id
        log(f'soak: {args.soak} frames {width}x{height} at {rate:g} Hz, ROS_DOMAIN_ID={domain}')
        result = node_bench.run_node(cfg, domain, log=log, progress=progress)
    except node_bench.BenchError as exc:
        raise DemoError(str(exc)) from None
    finally:
        if lease is not None:
            lease.release()
    result['memory'] = node_bench.memory_growth(result['samples'], args.warmup)
    return result


def format_soak(result: Dict[str, Any]) -> str:
    """Human summary of a soak run."""
    mem = result['memory']
    lat = result['latency_ms']
    text = (f'soak: published {result["published"]} frames in {result["seconds"]:.0f} s, node '
            f'received {result["received_by_node"]} (missed before it '
            f'{result["missed_before_node"]}), processed {result["processed"]} (skipped '
            f'{result["skipped_in_node"]}), rejected {result["rejected"]}, last error '
            f'{result["node_last_error"]!r}; '
            f'latency p50 {lat["p50"]} ms, p99 {lat["p99"]} ms')
    if 'rss_mb_at_warmup' in mem:
        text += (f'\n  node RSS after {mem["warmup_s"]:.0f} s warm-up '
                 f'{mem["rss_mb_at_warmup"]} MiB -> end {mem["rss_mb_end"]} MiB '
                 f'({mem["rss_growth_percent"]:+.2f}%; second half '
                 f'{mem["rss_growth_percent_second_half"]:+.2f}%; max {mem["rss_mb_max"]} MiB, '
                 f'trend {mem["rss_trend_mb_per_hour"]:+.1f} MiB/h); fds '
                 f'{mem["fds_at_warmup"]} -> {mem["fds_end"]} (max {mem["fds_max"]})')
    else:
        text += f'\n  too short for the {mem["warmup_s"]:.0f} s warm-up: no growth figure'
    return text


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of siam-demo."""
    args = build_parser().parse_args(argv)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)
    try:
        if args.soak is not None:
            if args.soak < 1:
                build_parser().error('--soak takes a number of frames >= 1')
            # SIGTERM as Ctrl-C: the node and publisher processes are stopped on the way out.
            signal.signal(signal.SIGTERM, _interrupt)
            model = resolve_model_arg(args.model, args.models_dir, log)
            result = run_soak(args, model, log)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
            print(format_soak(result))
            return 0
        if args.generate is not None:
            from siam_tracker_ros.eval.synthetic import write_clip
            target = args.generate or str(
                Path(args.json).with_name('demo_clip.mp4') if args.json else 'demo_clip.mp4')
            clip, gt_file = write_clip(target, frames=args.frames)
            log(f'wrote {clip} and {gt_file} ({args.frames} frames)')
            if not args.json:
                print(json.dumps({'video': str(clip), 'gt': str(gt_file)}))
                return 0
            args.video, args.gt = str(clip), str(gt_file)
        if not args.video or not args.json:
            build_parser().error('--video and --json are required (or --generate CLIP)')
        if args.gt and args.box:
            build_parser().error('give --gt or --box, not both')
        try:
            import siam_tracker_interfaces.msg  # noqa: F401
        except ImportError:
            raise DemoError('siam_tracker_interfaces is not importable: build it with '
                            '`make setup` and `source install/setup.sh`') from None
        model = resolve_model_arg(args.model, args.models_dir, log)
        out = Path(args.json)
        record = run_demo(args.video, model, gt_path=args.gt,
                          box=parse_box(args.box) if args.box else None,
                          backend=args.backend, device=args.device, rate=args.rate,
                          lockstep=args.lockstep, domain_id=args.domain_id,
                          load_timeout=args.timeout,
                          log_dir=out.with_name(out.stem + '.logs'), log=log,
                          dds_profile=args.dds_profile)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**record['summary'], 'per_frame': record['frames']},
                                  indent=1) + '\n')
        if args.out_video:
            from siam_tracker_ros.io.sequences import read_groundtruth
            write_video(args.video, record, args.out_video,
                        read_groundtruth(args.gt) if args.gt else None)
        print(format_summary(record['summary']))
        log(f'wrote {out}')
        return 0
    except DemoError as exc:
        print(f'siam-demo: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
