"""
ONNX export of the ST template-fusion module (nets.fusion_export), checked in ONNX Runtime.

The gates are set to non-zero values before export (an untrained module is the identity, which
would make the comparison empty). Tolerance: FUSION_TOL = 2e-4 relative to the largest torch
value, as for the template features of the split export; measured about 5e-7 absolute on
random features (peak about 8), and on NanoTrack v3's real features of bag's template.
The real-feature test needs ../shared (override with SIAM_SHARED) and is skipped without it.
"""
from collections import Counter

import needs_torch  # noqa: F401
import numpy as np
import pytest
from shared_data import bag_crops, V3_WEIGHTS
from siam_tracker_ros.nets.export import ExportError
from siam_tracker_ros.nets.fusion_export import (check_fusion, export_fusion, FUSION_INPUTS,
                                                 FUSION_OUTPUT, FUSION_TOL)
from siam_tracker_ros.nets.modules.st_fusion import STFusion
from siam_tracker_ros.nets.onnx_inspect import runtime_weight_convs
from siam_tracker_ros.nets.registry import build_net, load_weights
from siam_tracker_ros.nets.train_net import LearnedModules, TrainNet
import torch

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')


def _trained_like(channels: int, seed: int = 0) -> STFusion:
    torch.manual_seed(seed)
    fusion = STFusion(channels)
    with torch.no_grad():
        fusion.gate.normal_()
    return fusion


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=['CPUExecutionProvider'])


def _dims(value):
    return [d.dim_value if d.HasField('dim_value') else d.dim_param
            for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize('channels, memory', [(96, 3), (48, 1)])
def test_fusion_graph_matches_torch(tmp_path, channels, memory):
    fusion = _trained_like(channels).train()
    path = export_fusion(fusion, tmp_path / 'fusion.onnx', memory)
    assert fusion.training  # export restores the mode
    model = onnx.load(str(path))
    graph = model.graph
    assert [i.name for i in graph.input] == list(FUSION_INPUTS)
    assert [o.name for o in graph.output] == [FUSION_OUTPUT]
    assert _dims(graph.input[0]) == [1, channels, 8, 8]
    assert _dims(graph.input[1]) == [1, memory, channels, 8, 8]
    assert _dims(graph.output[0]) == [1, channels, 8, 8]
    ops = Counter(n.op_type for n in graph.node)
    assert ops['MatMul'] >= 2 and ops['Softmax'] == 1 and ops['Conv'] == 0
    assert runtime_weight_convs(path) == []
    err = check_fusion(fusion, path)  # raises beyond FUSION_TOL * peak
    print(f'fusion C={channels} N={memory}: ONNX Runtime vs torch max abs diff {err:.3g}')


def test_fusion_check_detects_a_different_module(tmp_path):
    fusion = _trained_like(96)
    path = export_fusion(fusion, tmp_path / 'fusion.onnx', 2)
    with torch.no_grad():
        fusion.gate.mul_(1.01)
    with pytest.raises(ExportError, match='differs from torch'):
        check_fusion(fusion, path)


def test_fusion_graph_on_real_features(tmp_path):
    if not V3_WEIGHTS.is_file():
        pytest.skip(f'{V3_WEIGHTS} is absent (needs ../shared)')
    base = load_weights(build_net('nanotrack_v3'), V3_WEIGHTS)
    net = TrainNet(base, LearnedModules(st_fusion=True, st_memory=3)).eval()
    with torch.no_grad():
        net.st_fusion.gate.normal_(generator=torch.Generator().manual_seed(0))
    path = export_fusion(net.st_fusion, tmp_path / 'fusion.onnx', 3)
    template, search = bag_crops()
    z = torch.from_numpy(template)
    shifts = [torch.roll(z, (dy, dx), dims=(2, 3)) for dy, dx in ((2, 0), (0, 3), (-2, -2))]
    with torch.no_grad():
        initial = net.features(z)
        memory = net.features(torch.cat(shifts))[None]
        ref = net.st_fusion(initial, memory).numpy()
        # The fused features are what TrainNet feeds the head for these templates.
        fused = net.template_features(torch.cat([z] + shifts)[None])
        assert torch.equal(fused, torch.from_numpy(ref))
    got, = _session(path).run([FUSION_OUTPUT], {FUSION_INPUTS[0]: initial.numpy(),
                                                FUSION_INPUTS[1]: memory.numpy()})
    err, peak = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    print(f'fusion on bag v3 features: max abs diff {err:.3g} (peak {peak:.3g})')
    assert err <= FUSION_TOL * peak
    # Every slot holding the initial features gives the single-copy result (the fill rule).
    filled, = _session(path).run([FUSION_OUTPUT], {
        FUSION_INPUTS[0]: initial.numpy(),
        FUSION_INPUTS[1]: np.repeat(initial.numpy()[:, None], 3, axis=1)})
    with torch.no_grad():
        single = net.st_fusion(initial, initial[:, None]).numpy()
    assert float(np.abs(filled - single).max()) <= FUSION_TOL * float(np.abs(single).max())
