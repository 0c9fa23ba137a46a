"""
Tiny model directories for the TensorRT tests (a few kB of ONNX, milliseconds to run).

Both produce anchor-free (cls, reg) maps that depend on every input, so a feature or output
bound to the wrong tensor changes the result:

* ``template_search``: template.onnx (template -> zf0, zf1 of equal shape) and search.onnx
  (search, zf0, zf1 -> cls, reg), static shapes, optional input mean/std;
* ``backbone_head``: backbone.onnx with a free input height/width (as an imported upstream
  NanoTrack backbone) and head.onnx (input1 = template features, input2 = search features
  -> output1 = cls, output2 = reg);
* ``fused``: a one-feature template/search model with a template-fusion graph (fusion.onnx).
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

from siam_tracker_ros.core.config import TrackerConfig
from siam_tracker_ros.core.manifest import load_manifest, ModelSpec, write_manifest


def _conv(name, x, out, cin, cout, rng, nodes, inits):
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, 1, 1)) * 0.5)
                                .astype(np.float32), f'{name}.w')
    b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32),
                                f'{name}.b')
    inits += [w, b]
    nodes.append(helper.make_node('Conv', [x, w.name, b.name], [out], name=name))


def _pool(x, out, k, nodes, inits=None):
    """Average-pool ``k`` x ``k``; with ``inits`` also scale pixels 0..255 to 0..1."""
    pooled = f'{out}_raw' if inits is not None else out
    nodes.append(helper.make_node('AveragePool', [x], [pooled], kernel_shape=[k, k],
                                  strides=[k, k], name=f'pool_{out}'))
    if inits is not None:
        inits.append(numpy_helper.from_array(np.array(1 / 255, np.float32), f'{out}_scale'))
        nodes.append(helper.make_node('Mul', [pooled, f'{out}_scale'], [out],
                                      name=f'scale_{out}'))


def _mean(x, out, nodes):
    nodes.append(helper.make_node('ReduceMean', [x], [out], axes=[2, 3], keepdims=1,
                                  name=f'mean_{out}'))


def _save(nodes, inputs, outputs, inits, path):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def template_search(root, seed=0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> ModelSpec:
    """Write a tiny template/search model (7x7 template features, 15x15 maps) into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    _pool('template', 'tp', 16, nodes, inits)
    _conv('t0', 'tp', 'zf0', 3, 4, rng, nodes, inits)
    _conv('t1', 'tp', 't1o', 3, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['t1o'], ['zf1'], name='relu_t1'))
    _save(nodes, [_value('template', [1, 3, 127, 127])],
          [_value('zf0', [1, 4, 7, 7]), _value('zf1', [1, 4, 7, 7])], inits,
          root / 'template.onnx')
    nodes, inits = [], []
    _pool('search', 'sp', 16, nodes, inits)
    _conv('s0', 'sp', 'xf', 3, 4, rng, nodes, inits)
    _mean('zf0', 'z0', nodes)
    _mean('zf1', 'z1', nodes)
    two = numpy_helper.from_array(np.array(2.0, np.float32), 'two')
    inits.append(two)
    nodes += [helper.make_node('Mul', ['xf', 'z0'], ['xz'], name='mul_xz'),
              helper.make_node('Mul', ['z1', 'two'], ['z1x2'], name='mul_z1'),
              helper.make_node('Add', ['xz', 'z1x2'], ['h0'], name='add_h'),
              helper.make_node('Relu', ['h0'], ['h'], name='relu_h')]
    _conv('cls', 'h', 'cls', 4, 2, rng, nodes, inits)
    _conv('reg', 'h', 'reg_raw', 4, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['reg_raw'], ['reg'], name='relu_reg'))
    _save(nodes, [_value('search', [1, 3, 255, 255]), _value('zf0', [1, 4, 7, 7]),
                  _value('zf1', [1, 4, 7, 7])],
          [_value('cls', [1, 2, 15, 15]), _value('reg', [1, 4, 15, 15])], inits,
          root / 'search.onnx')
    spec = ModelSpec(root=root.resolve(), name=f'tiny-ts{seed}', family='nanotrack',
                     decoder='anchor_free', layout='template_search', stride=16,
                     files={'template': 'template.onnx', 'search': 'search.onnx'},
                     arch='tiny', input_mean=tuple(mean), input_std=tuple(std),
                     tracker=TrackerConfig())
    write_manifest(spec)
    return load_manifest(root)


def backbone_head(root, seed=0) -> ModelSpec:
    """Write a tiny backbone/head model with a dynamic-size backbone input into ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    _pool('input', 'bp', 8, nodes, inits)
    _conv('b0', 'bp', 'b0o', 3, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['b0o'], ['output'], name='relu_b0'))
    _save(nodes, [_value('input', [1, 3, 'height', 'width'])],
          [_value('output', [1, 4, 'out_height', 'out_width'])], inits, root / 'backbone.onnx')
    nodes, inits = [], []
    _mean('input1', 'z', nodes)
    nodes += [helper.make_node('Mul', ['input2', 'z'], ['xz'], name='mul_xz'),
              helper.make_node('Relu', ['xz'], ['xr'], name='relu_xz')]
    _pool('xr', 'h', 2, nodes)
    _conv('cls', 'h', 'output1', 4, 2, rng, nodes, inits)
    _conv('reg', 'h', 'reg_raw', 4, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['reg_raw'], ['output2'], name='relu_reg'))
    _save(nodes, [_value('input1', [1, 4, 15, 15]), _value('input2', [1, 4, 31, 31])],
          [_value('output1', [1, 2, 15, 15]), _value('output2', [1, 4, 15, 15])], inits,
          root / 'head.onnx')
    spec = ModelSpec(root=root.resolve(), name=f'tiny-bh{seed}', family='nanotrack',
                     decoder='anchor_free', layout='backbone_head', stride=16,
                     files={'backbone': 'backbone.onnx', 'head': 'head.onnx'}, arch='tiny',
                     tracker=TrackerConfig())
    write_manifest(spec)
    return load_manifest(root)


def template_search_temporal(root, seed=0) -> ModelSpec:
    """
    Write a tiny temporal (TAFA-like) template/search model into ``root``.

    template.onnx: template -> zf (1, 4, 7, 7). search.onnx: search, zf, xf_prev1, xf_prev2
    -> cls, reg, xf, where xf (1, 4, 15, 15) is the search crop's own features and the maps
    depend on every input (the previous features with different weights).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    _pool('template', 'tp', 16, nodes, inits)
    _conv('t0', 'tp', 'zf', 3, 4, rng, nodes, inits)
    _save(nodes, [_value('template', [1, 3, 127, 127])], [_value('zf', [1, 4, 7, 7])], inits,
          root / 'template.onnx')
    nodes, inits = [], []
    _pool('search', 'sp', 16, nodes, inits)
    _conv('s0', 'sp', 'xf', 3, 4, rng, nodes, inits)
    _mean('zf', 'z', nodes)
    inits += [numpy_helper.from_array(np.array(0.7, np.float32), 'w1'),
              numpy_helper.from_array(np.array(-0.3, np.float32), 'w2')]
    nodes += [helper.make_node('Mul', ['xf_prev1', 'w1'], ['p1'], name='mul_p1'),
              helper.make_node('Mul', ['xf_prev2', 'w2'], ['p2'], name='mul_p2'),
              helper.make_node('Add', ['xf', 'p1'], ['s1'], name='add_p1'),
              helper.make_node('Add', ['s1', 'p2'], ['s2'], name='add_p2'),
              helper.make_node('Mul', ['s2', 'z'], ['h0'], name='mul_z'),
              helper.make_node('Relu', ['h0'], ['h'], name='relu_h')]
    _conv('cls', 'h', 'cls', 4, 2, rng, nodes, inits)
    _conv('reg', 'h', 'reg_raw', 4, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['reg_raw'], ['reg'], name='relu_reg'))
    _save(nodes, [_value('search', [1, 3, 255, 255]), _value('zf', [1, 4, 7, 7]),
                  _value('xf_prev1', [1, 4, 15, 15]), _value('xf_prev2', [1, 4, 15, 15])],
          [_value('cls', [1, 2, 15, 15]), _value('reg', [1, 4, 15, 15]),
           _value('xf', [1, 4, 15, 15])], inits, root / 'search.onnx')
    spec = ModelSpec(root=root.resolve(), name=f'tiny-tt{seed}', family='nanotrack',
                     decoder='anchor_free', layout='template_search', stride=16,
                     files={'template': 'template.onnx', 'search': 'search.onnx'},
                     arch='tiny', tracker=TrackerConfig(), temporal_frames=2)
    write_manifest(spec)
    return load_manifest(root)


def fused(root, memory=2, seed=0) -> ModelSpec:
    """
    Write a tiny template/search model with a template-fusion graph into ``root``.

    template.onnx (template -> zf 1x4x7x7), search.onnx (search, zf -> cls, reg) and
    fusion.onnx (zf_initial, zf_memory 1xNx4x7x7 -> zf = relu(conv(zf_initial)) + the mean of
    the memory slots weighted by their position, so order and every slot count).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    _pool('template', 'tp', 16, nodes, inits)
    _conv('t0', 'tp', 'zf', 3, 4, rng, nodes, inits)
    _save(nodes, [_value('template', [1, 3, 127, 127])], [_value('zf', [1, 4, 7, 7])], inits,
          root / 'template.onnx')
    nodes, inits = [], []
    _pool('search', 'sp', 16, nodes, inits)
    _conv('s0', 'sp', 'xf', 3, 4, rng, nodes, inits)
    _mean('zf', 'z0', nodes)
    nodes += [helper.make_node('Mul', ['xf', 'z0'], ['xz'], name='mul_xz'),
              helper.make_node('Relu', ['xz'], ['h'], name='relu_h')]
    _conv('cls', 'h', 'cls', 4, 2, rng, nodes, inits)
    _conv('reg', 'h', 'reg_raw', 4, 4, rng, nodes, inits)
    nodes.append(helper.make_node('Relu', ['reg_raw'], ['reg'], name='relu_reg'))
    _save(nodes, [_value('search', [1, 3, 255, 255]), _value('zf', [1, 4, 7, 7])],
          [_value('cls', [1, 2, 15, 15]), _value('reg', [1, 4, 15, 15])], inits,
          root / 'search.onnx')
    nodes, inits = [], []
    _conv('f0', 'zf_initial', 'fi', 4, 4, rng, nodes, inits)
    weights = (np.arange(1, memory + 1, dtype=np.float32) / memory).reshape(1, memory, 1, 1, 1)
    inits.append(numpy_helper.from_array(weights, 'slot_w'))
    nodes += [helper.make_node('Relu', ['fi'], ['fr'], name='relu_f'),
              helper.make_node('Mul', ['zf_memory', 'slot_w'], ['mw'], name='mul_slots'),
              helper.make_node('ReduceMean', ['mw'], ['mm'], axes=[1], keepdims=0,
                               name='mean_slots'),
              helper.make_node('Add', ['fr', 'mm'], ['zf'], name='add_f')]
    _save(nodes, [_value('zf_initial', [1, 4, 7, 7]), _value('zf_memory', [1, memory, 4, 7, 7])],
          [_value('zf', [1, 4, 7, 7])], inits, root / 'fusion.onnx')
    spec = ModelSpec(root=root.resolve(), name=f'tiny-fused{seed}', family='nanotrack',
                     decoder='anchor_free', layout='template_search', stride=16,
                     files={'template': 'template.onnx', 'search': 'search.onnx',
                            'fusion': 'fusion.onnx'},
                     arch='tiny', tracker=TrackerConfig(), fusion_memory=memory)
    write_manifest(spec)
    return load_manifest(root)
