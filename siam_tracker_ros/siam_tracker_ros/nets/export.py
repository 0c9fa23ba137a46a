"""
ONNX export of Siamese nets as two graphs, and product model directories.

A net that can be exported has ``split() -> (template_encoder, search_head)``:

* ``template_encoder(template)`` maps a (1, 3, Z, Z) crop to one tensor or a tuple of tensors
  (the template features, e.g. one per pyramid level);
* ``search_head(search, *features)`` maps a (1, 3, X, X) crop plus those features, in the same
  order, to ``(cls, reg)``.

``export_split`` writes them as ``template.onnx`` (input ``template``; output ``zf``, or
``zf0``, ``zf1``, ... for several) and ``search.onnx`` (inputs ``search`` + the zf names;
outputs ``cls``, ``reg``) with static shapes. Every Conv in the exported graphs must take its
weights from a constant: TensorRT's ONNX parser rejects runtime-weight convolutions, which is
why the correlations in ``nets.ops`` avoid ``F.conv2d(x, kernel)``. ``runtime_weight_convs``
is the check.
"""
from __future__ import annotations

import inspect
from pathlib import Path
import shutil
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn as nn

from .onnx_inspect import runtime_weight_convs  # noqa: F401 (part of this module's API)
from ..core.config import TrackerConfig
from ..core.manifest import (AnchorSpec, FUSION_ROLE, load_manifest, ModelError, ModelSpec,
                             MODULES_ROLE, write_manifest)

PathLike = Union[str, Path]

TEMPLATE_FILE = 'template.onnx'
SEARCH_FILE = 'search.onnx'
CHECKPOINT_FILE = 'checkpoint.pth'

# Tracking hyper-parameters of the published NanoTrack weights (upstream configv{1,2,3}.yaml).
NANOTRACK_HPARAMS: Dict[int, Dict[str, float]] = {
    1: {'penalty_k': 0.148, 'window_influence': 0.462, 'lr': 0.390},
    2: {'penalty_k': 0.150, 'window_influence': 0.490, 'lr': 0.385},
    3: {'penalty_k': 0.138, 'window_influence': 0.455, 'lr': 0.348},
}


class ExportError(RuntimeError):
    """An export produced a graph that the product cannot use."""


def feature_names(count: int) -> List[str]:
    """ONNX names of the template features: ['zf'] for one tensor, ['zf0', 'zf1', ...]."""
    return ['zf'] if count == 1 else [f'zf{i}' for i in range(count)]


def _as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def export_onnx(module: nn.Module, args: Tuple[torch.Tensor, ...], path: Path,
                input_names: Sequence[str], output_names: Sequence[str], opset: int) -> None:
    """Export ``module`` called with ``args`` to ONNX at ``path`` (static shapes)."""
    # The TorchScript-based exporter: static shapes, constant folding (BN folds into Conv),
    # no onnxscript dependency.
    kwargs = {}
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5
        kwargs['dynamo'] = False
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, args, str(path), input_names=list(input_names),
                          output_names=list(output_names), opset_version=opset,
                          do_constant_folding=True, **kwargs)


def _run_node(node: onnx.NodeProto, inputs: Dict[str, np.ndarray], opsets) -> List[np.ndarray]:
    """Evaluate one node on numpy inputs with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    helper = onnx.helper
    sub = helper.make_graph(
        [node], 'fold',
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for o in node.output])
    model = helper.make_model(sub, opset_imports=opsets)
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, inputs)]


def _constant_value(node: onnx.NodeProto, opsets) -> np.ndarray:
    for attr in node.attribute:
        if attr.name == 'value':
            return numpy_helper.to_array(attr.t)
    return _run_node(node, {}, opsets)[0]


_NEVER_FOLD = frozenset({'Constant', 'RandomNormal', 'RandomUniform', 'RandomNormalLike',
                         'RandomUniformLike', 'Multinomial', 'Bernoulli'})


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in graph.node for a in n.attribute)


def _static_shapes(model: onnx.ModelProto) -> Dict[str, List[int]]:
    """Return the fully static shapes onnx's shape inference finds, by value name."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: Dict[str, List[int]] = {}
    for info in list(g.input) + list(g.value_info) + list(g.output):
        t = info.type.tensor_type
        if t.HasField('shape') and all(d.HasField('dim_value') for d in t.shape.dim):
            shapes[info.name] = [int(d.dim_value) for d in t.shape.dim]
    return shapes


def _shape_value(node: onnx.NodeProto, shapes: Mapping[str, List[int]]) -> Optional[np.ndarray]:
    """Return the output of a Shape node whose input has a static shape (else None)."""
    if node.op_type != 'Shape' or node.input[0] not in shapes:
        return None
    attrs = {a.name: a.i for a in node.attribute}
    dims = shapes[node.input[0]]
    return np.array(dims[attrs.get('start', 0):attrs.get('end', len(dims))], dtype=np.int64)


def fold_constants(model: onnx.ModelProto) -> int:
    """
    Replace every node computable from constants alone by initializers; return the count.

    The TorchScript exporter leaves small shape computations (e.g. the pads of a Pad:
    ConstantOfShape -> Concat -> Reshape -> ... -> Cast, or Shape -> Gather -> Div for a
    chunk) in the graph. Folding them leaves only real run-time work and literal parameters,
    which TensorRT and every runtime read directly. A Shape of a tensor whose shape is static
    counts as a constant. Constant nodes themselves are kept; nodes with subgraphs are never
    folded.
    """
    graph = model.graph
    values: Dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    shapes = (_static_shapes(model) if any(n.op_type == 'Shape' for n in graph.node)
              else {})
    for node in graph.node:
        if node.op_type == 'Constant' and len(node.output) == 1:
            values[node.output[0]] = _constant_value(node, model.opset_import)
    graph_outputs = {o.name for o in graph.output}
    keep: List[onnx.NodeProto] = []
    new_inits: List[onnx.TensorProto] = []
    folded = 0
    for node in graph.node:
        shape = _shape_value(node, shapes)
        if shape is not None and not graph_outputs.intersection(node.output):
            values[node.output[0]] = shape
            new_inits.append(numpy_helper.from_array(shape, node.output[0]))
            folded += 1
            continue
        foldable = (node.op_type not in _NEVER_FOLD and node.domain in ('', 'ai.onnx')
                    and len(node.input) > 0
                    and all(i == '' or i in values for i in node.input)
                    and not any(a.type in (onnx.AttributeProto.GRAPH,
                                           onnx.AttributeProto.GRAPHS) for a in node.attribute)
                    and not graph_outputs.intersection(node.output))
        if not foldable:
            keep.append(node)
            continue
        results = _run_node(node, {i: values[i] for i in node.input if i}, model.opset_import)
        for name, value in zip(node.output, results):
            values[name] = value
            new_inits.append(numpy_helper.from_array(value, name))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(new_inits)
        del graph.value_info[:]
        if not _has_subgraphs(graph):  # subgraphs may read outer names: keep everything then
            used = ({i for n in graph.node for i in n.input} | graph_outputs
                    | {i.name for i in graph.input})
            live_inits = [t for t in graph.initializer if t.name in used]
            del graph.initializer[:]
            graph.initializer.extend(live_inits)
            live_nodes = [n for n in graph.node if n.op_type != 'Constant'
                          or any(o in used for o in n.output)]
            del graph.node[:]
            graph.node.extend(live_nodes)
    return folded


def export_graph(module: nn.Module, args: Tuple[torch.Tensor, ...], path: PathLike,
                 input_names: Sequence[str], output_names: Sequence[str], opset: int = 17,
                 check: bool = True) -> Path:
    """
    Export one graph the TensorRT-safe way; return its path.

    ``export_onnx``, then ``fold_constants``; with ``check`` the graph is validated with
    ``onnx.checker`` and an ``ExportError`` is raised when any Conv would take run-time weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_onnx(module, args, path, input_names, output_names, opset)
    model = onnx.load(str(path))
    if fold_constants(model):
        onnx.save(model, str(path))
    if check:
        onnx.checker.check_model(str(path))
        bad = runtime_weight_convs(path)
        if bad:
            raise ExportError(f'{path}: Conv nodes with run-time weights {bad}; TensorRT '
                              'cannot parse them (use nets.ops correlations)')
    return path


def cpu_session(path: PathLike):
    """Return a one-thread ONNX Runtime CPU session of ``path`` (for export checks)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=['CPUExecutionProvider'])


def compare_outputs(path: PathLike, names: Sequence[str], got: Sequence[np.ndarray],
                    ref: Sequence[np.ndarray], tols: Sequence[float]) -> Dict[str, float]:
    """
    Return the max abs difference of each ONNX Runtime output from its torch reference.

    Raises ``ExportError`` when a shape differs or an error exceeds its tolerance times the
    largest torch value.
    """
    errors = {}
    for name, g, r, tol in zip(names, got, ref, tols):
        if g.shape != r.shape:
            raise ExportError(f'{path}: output {name} shape {g.shape} != torch {r.shape}')
        err = float(np.abs(g - r).max())
        peak = float(np.abs(r).max())
        if err > tol * peak:
            raise ExportError(f'{path}: ONNX Runtime {name} differs from torch by {err:.3g} > '
                              f'{tol} * peak {peak:.3g}')
        errors[name] = err
    return errors


def export_split(net: nn.Module, out_dir: PathLike, exemplar_size: int, instance_size: int,
                 opset: int = 17, check: bool = True) -> Tuple[Path, Path]:
    """
    Export ``net.split()`` as ``out_dir/template.onnx`` and ``out_dir/search.onnx``.

    Shapes are static: template (1, 3, exemplar_size, exemplar_size), search
    (1, 3, instance_size, instance_size). With ``check`` the graphs are validated with
    ``onnx.checker`` and an ``ExportError`` is raised when any Conv would take run-time
    weights. Returns (template path, search path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    template, search = net.split()
    device = next(iter(net.parameters())).device
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(1, 3, exemplar_size, exemplar_size, generator=gen) * 255.0).to(device)
    x = (torch.rand(1, 3, instance_size, instance_size, generator=gen) * 255.0).to(device)
    with torch.inference_mode():
        zf = _as_tuple(template(z))
    zf = tuple(t.clone() for t in zf)  # inference tensors cannot be traced
    names = feature_names(len(zf))
    tpath, spath = out / TEMPLATE_FILE, out / SEARCH_FILE
    export_graph(template, (z,), tpath, ['template'], names, opset, check)
    export_graph(search, (x, *zf), spath, ['search', *names], ['cls', 'reg'], opset, check)
    return tpath, spath


def write_model_dir(out_dir: PathLike, *, name: str, family: str, arch: str, decoder: str,
                    stride: int, tracker: TrackerConfig, template_onnx: PathLike,
                    search_onnx: PathLike, checkpoint: Optional[PathLike] = None,
                    input_order: str = 'bgr',
                    input_mean: Sequence[float] = (0.0, 0.0, 0.0),
                    input_std: Sequence[float] = (1.0, 1.0, 1.0),
                    anchors: Optional[AnchorSpec] = None,
                    modules: Optional[PathLike] = None,
                    fusion_onnx: Optional[PathLike] = None,
                    fusion_memory: int = 0,
                    temporal_frames: int = 0) -> ModelSpec:
    """
    Make ``out_dir`` a product model directory (layout 'template_search') with a manifest.

    The graphs (and the optional PyTorch checkpoint) are copied in as ``template.onnx``,
    ``search.onnx`` and ``checkpoint.pth`` unless they are already those files; the manifest
    records their sha256 and the given hyper-parameters. Learned modules add ``modules.pth``
    (their state, which the torch backend runs): a template fusion adds ``fusion.onnx`` (with
    ``fusion_memory`` slots), a temporal search graph (``temporal_frames`` > 0) is the
    ``search_onnx`` given. Returns the verified spec read back.
    """
    from .modules_file import MODULES_FILE
    if (fusion_onnx is not None or temporal_frames) and modules is None:
        raise ValueError('a fusion graph or a temporal search graph needs its modules.pth')
    if fusion_onnx is not None and fusion_memory < 1:
        raise ValueError('a fusion graph needs a memory size >= 1')
    root = Path(out_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sources: Dict[str, Tuple[Path, str]] = {
        'template': (Path(template_onnx), TEMPLATE_FILE),
        'search': (Path(search_onnx), SEARCH_FILE)}
    if checkpoint is not None:
        sources['checkpoint'] = (Path(checkpoint), CHECKPOINT_FILE)
    if fusion_onnx is not None:
        from .fusion_export import FUSION_FILE
        sources[FUSION_ROLE] = (Path(fusion_onnx), FUSION_FILE)
    if modules is not None:
        sources[MODULES_ROLE] = (Path(modules), MODULES_FILE)
    files: Dict[str, str] = {}
    for role, (src, rel) in sources.items():
        if not src.is_file():
            raise FileNotFoundError(f'{role} file {src} does not exist')
        dst = root / rel
        if src.resolve() != dst:
            shutil.copyfile(src, dst)
        files[role] = rel
    spec = ModelSpec(root=root, name=name, family=family, decoder=decoder,
                     layout='template_search', stride=int(stride), files=files, arch=arch,
                     input_order=input_order,
                     input_mean=tuple(float(v) for v in input_mean),
                     input_std=tuple(float(v) for v in input_std),
                     tracker=tracker, anchors=anchors,
                     fusion_memory=int(fusion_memory) if fusion_onnx is not None else 0,
                     temporal_frames=int(temporal_frames))
    write_manifest(spec)
    return load_manifest(root)


def nanotrack_tracker_config(version: int) -> TrackerConfig:
    """Tracker hyper-parameters the NanoTrack v``version`` weights were tuned with."""
    if version not in NANOTRACK_HPARAMS:
        raise ValueError(f'NanoTrack version must be one of {sorted(NANOTRACK_HPARAMS)}, '
                         f'got {version!r}')
    return TrackerConfig().replace(exemplar_size=127, instance_size=255, context_amount=0.5,
                                   **NANOTRACK_HPARAMS[version])


def _template_shape(path: Path) -> Tuple[int, ...]:
    dims = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) for d in dims)


# Default model-name suffixes of the learned modules a model runs.
_TAGS = {'st_fusion': 'st', 'layer_aggregation': 'la', 'tafa': 'tafa',
         'feature_modulation': 'fm', 'da_attention': 'da'}


def export_nanotrack(version: int, checkpoint: PathLike, out_dir: PathLike,
                     opset: int = 17, name: Optional[str] = None,
                     modules: Optional[PathLike] = None) -> ModelSpec:
    """
    Build NanoTrack v``version``, load ``checkpoint`` strictly, write a model directory.

    ``out_dir`` receives template.onnx, search.onnx (constant-weight convolutions only),
    checkpoint.pth (the state dict alone, for the torch backend) and manifest.json with the
    upstream tracking hyper-parameters; the model is named ``name`` or the arch (plus -st,
    -la, -tafa, -fm, -da for the learned modules in it). ``modules``, a siam-train modules.pth
    of the same run, adds what its switched-on modules need at inference
    (``nets.modules_file``): ST fusion its fusion.onnx (``nets.fusion_export``); layer
    aggregation, TAFA, feature modulation and DA attention the template / search graphs
    exported from the TrainNet with them in place of the base ones (``nets.module_export``:
    only TAFA changes the search graph's interface, and layer aggregation alone changes the
    template graph); each graph is checked against torch in ONNX Runtime and the folder gets
    modules.pth. Training-only modules export as the plain net. Returns the verified
    ModelSpec.
    """
    from .registry import build_net, load_weights

    tracker = nanotrack_tracker_config(version)
    step = tracker.step
    arch = f'nanotrack_v{version}'
    learned = None
    if modules is not None:
        from .modules_file import check_exportable, read_modules
        learned = read_modules(modules, arch)
        check_exportable(learned, modules)
    net = load_weights(build_net(arch), checkpoint, strict=True)
    root = Path(out_dir)
    tpath, spath = export_split(net, root, step.exemplar_size, step.instance_size, opset=opset)
    ckpt = root / CHECKPOINT_FILE
    torch.save({'arch': arch, 'state_dict': net.state_dict()}, ckpt)
    extra: Dict[str, object] = {}
    runtime = learned.runtime if learned is not None else ()
    if learned is not None and learned.graph:
        from .module_export import (check_module_graphs, export_module_graphs, FRAMES,
                                    module_net)
        learned_net = module_net(net, learned, modules)
        export_module_graphs(learned_net, tpath, spath, step.instance_size,
                             step.exemplar_size, opset)
        check_module_graphs(learned_net, tpath, spath)
        if learned.config.tafa:
            extra['temporal_frames'] = FRAMES
    if 'st_fusion' in runtime:
        from .fusion_export import check_fusion, export_fusion, FUSION_FILE, fusion_module
        module = fusion_module(learned, modules)
        want = _template_shape(tpath)
        if want != (1, module.channels, *module.size):
            raise ModelError(f'{modules}: st_fusion was trained on ({module.channels}, '
                             f'{module.size[0]}, {module.size[1]}) template features, the '
                             f'{arch} template graph gives {want[1:]}')
        memory = learned.config.st_memory
        fpath = export_fusion(module, root / FUSION_FILE, memory, opset=opset)
        check_fusion(module, fpath)
        extra.update(fusion_onnx=fpath, fusion_memory=memory)
    if runtime:
        from .modules_file import MODULES_FILE, save_modules
        extra['modules'] = save_modules(learned, root / MODULES_FILE)
    tags = ''.join(f'-{_TAGS[m]}' for m in runtime)
    return write_model_dir(root, name=name or arch + tags, family='nanotrack', arch=arch,
                           decoder='anchor_free', stride=16, tracker=tracker,
                           template_onnx=tpath, search_onnx=spath, checkpoint=ckpt, **extra)
