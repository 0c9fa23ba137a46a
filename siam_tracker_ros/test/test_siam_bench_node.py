"""
siam-bench --node and siam-demo --soak on short runs: what is counted and reported.

Real processes (tracker_node on NanoTrack v3, video_publisher or the minimal publisher) on the
session's private ROS_DOMAIN_ID. Figures are benchmarks: the tests check their consistency and
content, never speed.
"""
import json
from pathlib import Path
import sys

from ros_helpers import require_interfaces, require_model, ros_env, run

require_interfaces()

from siam_tracker_ros.tooling.node_bench import memory_growth  # noqa: E402

BENCH = [sys.executable, '-m', 'siam_tracker_ros.cli.siam_bench']
DEMO = [sys.executable, '-m', 'siam_tracker_ros.cli.siam_demo']
STAGES = {'receive', 'wait', 'convert', 'crop', 'network', 'policies', 'publish'}


def test_node_bench_short_run_with_both_publishers(ros_domain, model_cache, tmp_path):
    model = require_model()
    out = tmp_path / 'bench.json'
    res = run(BENCH + ['--node', '--model', str(model), '--size', '320x240', '--rate', '20',
                       '--duration', '3', '--publisher', 'video', '--publisher', 'minimal',
                       '--clip-frames', '10', '--work-dir', str(tmp_path / 'work'),
                       '--json', str(out)], ros_env(ros_domain, model_cache), timeout=300)
    assert res.returncode == 0, res.stdout
    result = json.loads(out.read_text())
    runs = {r['config']['publisher']: r for r in result['node_runs']}
    assert set(runs) == {'video', 'minimal'}
    for name, r in runs.items():
        config = dict(r['config'])
        assert Path(config.pop('model')).resolve() == Path(model).resolve()
        assert config == {'size': '320x240', 'rate_hz': 20.0, 'frames': 60,
                          'transport': 'raw', 'publisher': name,
                          'dds_profile': 'large_images', 'backend': 'auto', 'device': 'cpu'}
        assert r['published'] == 60, name
        assert 0 < r['processed'] <= r['processed_by_node'] <= r['received_by_node'] <= 60
        assert r['processed_ratio'] == round(r['processed'] / 60, 4)
        # missed_before_node is None where rclpy passes no MessageInfo (Humble)
        assert r['received_by_node'] + (r['missed_before_node'] or 0) <= 60
        assert r['skipped_in_node'] >= 0 and r['rejected'] == 0
        lat = r['latency_ms']
        assert 0 < lat['p50'] <= lat['p99'] <= lat['max']
        assert set(r['stages_ms']) == STAGES, r['stages_ms']
        for stage, v in r['stages_ms'].items():
            assert 0 <= v['p50'] <= v['p99'], stage
        # The generated target is tracked (TrackedObject state 1 = TRACKING) on most frames.
        assert r['states'].get('1', 0) >= 0.8 * r['processed'], r['states']
        assert r['samples'] and all(s['rss_mb'] > 50 and s['fds'] > 3 for s in r['samples'])
        assert r['cpu']['node_percent'] > 0
        assert r['exit_codes'] == {'publisher': 0, 'tracker': 0}
    assert '320x240 raw video large_images' in res.stdout and 'stages p50/p99' in res.stdout
    assert result['host']['cores'] >= 1


def test_node_bench_input_errors(ros_domain, tmp_path):
    env = ros_env(ros_domain)
    res = run(BENCH + ['--node', '--profile', 'big', '--model', str(tmp_path)], env)
    assert res.returncode == 1 and 'large_images, none nor an existing .xml' in res.stdout
    res = run(BENCH + ['--node', '--size', '1280'], env)
    assert res.returncode == 2 and 'is not WxH' in res.stdout
    res = run(BENCH + ['--frames', '5'], env)
    assert res.returncode == 2 and '--model is required' in res.stdout


def test_memory_growth_after_warmup():
    samples = [{'t': float(t), 'rss_mb': 100.0 + (20.0 if t < 10 else 0.1 * (t - 10)),
                'fds': 20 + (t >= 30)} for t in range(0, 41, 2)]
    growth = memory_growth(samples, warmup_s=10.0)
    assert growth['rss_mb_at_warmup'] == 100.0           # the first sample at t >= 10 s
    assert growth['rss_mb_end'] == 102.6                  # median of t = 32..40 s
    assert growth['rss_growth_percent'] == 2.6
    assert growth['rss_growth_percent_second_half'] == 0.98   # t = 26 s (101.6) -> end
    assert growth['rss_trend_mb_per_hour'] == 360.0       # 0.1 MiB/s
    assert (growth['fds_at_warmup'], growth['fds_end'], growth['fds_max']) == (20, 21, 21)
    assert memory_growth(samples[:3], warmup_s=10.0) == {'warmup_s': 10.0,
                                                         'samples_after_warmup': 0}


def test_demo_soak_short(ros_domain, model_cache, tmp_path):
    model = require_model()
    out = tmp_path / 'soak.json'
    res = run(DEMO + ['--soak', '600', '--rate', '100', '--size', '320x240', '--warmup', '1',
                      '--model', str(model), '--json', str(out)],
              ros_env(ros_domain, model_cache), timeout=300)
    assert res.returncode == 0, res.stdout
    result = json.loads(out.read_text())
    assert result['published'] == 600 and result['config']['size'] == '320x240'
    mem = result['memory']
    assert mem['samples_after_warmup'] >= 1
    assert mem['rss_mb_at_warmup'] > 50 and mem['fds_end'] > 3
    assert 'node RSS after 1 s warm-up' in res.stdout
