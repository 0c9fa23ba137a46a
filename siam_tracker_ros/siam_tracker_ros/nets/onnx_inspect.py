"""
Inspection of ONNX graphs for what TensorRT's ONNX parser cannot build (onnx only, no torch).

TensorRT builds a Conv only when its weights are constant; a correlation written as a Conv
whose weights come from the template (upstream NanoTrack v3's head) fails to build.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Set, Union

import onnx

PathLike = Union[str, Path]


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f'{node.op_type}_{index}'


def _runtime_weight_convs(graph: onnx.GraphProto, outer_constants: Set[str]) -> List[str]:
    constants = set(outer_constants) | {init.name for init in graph.initializer}
    constants |= {init.values.name for init in graph.sparse_initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == 'Constant' and n.output}
    producers = {}
    for node in graph.node:
        for name in node.output:
            producers[name] = node

    def is_constant(name: str, depth: int = 0) -> bool:
        if name in constants:
            return True
        node = producers.get(name)
        if node is None or depth > 64:
            return False
        if node.op_type == 'Constant':
            return True
        if node.op_type == 'Identity':
            return is_constant(node.input[0], depth + 1)
        if node.op_type == 'DequantizeLinear':  # QDQ weights, which TensorRT accepts
            return is_constant(node.input[0], depth + 1)
        return False

    bad: List[str] = []
    for i, node in enumerate(graph.node):
        if node.op_type in ('Conv', 'ConvTranspose') and node.domain in ('', 'ai.onnx'):
            if len(node.input) < 2 or not is_constant(node.input[1]):
                bad.append(_node_label(node, i))
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField('g') else [])
            for sub in subgraphs:
                bad += _runtime_weight_convs(sub, constants)
    return bad


def runtime_weight_convs(onnx_path: PathLike) -> List[str]:
    """
    Names of Conv/ConvTranspose nodes whose weight input is not a constant.

    A weight counts as constant when it is an initializer or the output of a Constant node,
    possibly through Identity (or DequantizeLinear, the QDQ form TensorRT accepts). Nodes
    without a name are reported as ``<op>_<index>``. Subgraphs (If/Loop) are searched too.
    An empty list means TensorRT's parser will find constant weights on every convolution.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    return _runtime_weight_convs(model.graph, set())
