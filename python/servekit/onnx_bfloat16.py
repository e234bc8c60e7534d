"""bfloat16 in ONNX graphs that ONNX Runtime's CPU provider can run.

A Keras model under the `mixed_bfloat16` or `bfloat16` dtype policy computes in
bfloat16. Its ONNX graph, from any converter, types those tensors `BFLOAT16`,
but ONNX Runtime's CPU kernels for `MatMul`, `Relu`, `Softmax` and most other
ops have no bfloat16 variant ("Could not find an implementation for Relu(14)"),
so the graph does not load. `lower_bfloat16` rewrites the graph to compute in
float32 and to round to bfloat16 wherever the source model casts to it:

- every `Cast(to=BFLOAT16)` is followed by a `Cast(to=FLOAT)`, so its consumers
  see float32 values that bfloat16 can represent, as the source's did;
- bfloat16 initializers stay bfloat16, each read through a `Cast(to=FLOAT)`
  under its own name (exact: every bfloat16 is a float32): the file holds the
  weights at their own size, and ONNX Runtime folds the casts when it loads
  the model, into the float32 weights its kernels need. servekit's own check
  keeps them unfolded (`casts_weights`), so that it holds the weights once,
  at their own size (also the float32 weights a `mixed_bfloat16` model
  rounds);
- bfloat16 `Constant`s become float32;
- the graph's bfloat16 inputs are cast to float32 where they enter, and its
  bfloat16 outputs are cast back where they leave, so the signature is unchanged;
- the other dtype attributes that name bfloat16 (`CastLike` targets come from
  tensors and need nothing; `dtype` of random and `EyeLike` ops, `ConstantOfShape`
  values) name float32.

The artifact then differs from the source by the roundings of intermediate
results the source keeps in bfloat16 (between two casts), within bfloat16's
declared tolerance (`servekit.verification.tolerances_for`), and runs on every
provider.

It also corrects tf2onnx's dtype table, which maps TensorFlow's bfloat16 to
ONNX FLOAT16 (`tf2onnx_bfloat16`): a graph converted with it casts inputs to
float16 and multiplies them with bfloat16 weights, which no runtime loads
("Type parameter (T) of Optype (MatMul) bound to different types").
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

BFLOAT16_SUFFIX = "__servekit_bfloat16"


def has_bfloat16(model_proto) -> bool:
    """Whether any initializer, value or cast of the graph is bfloat16."""
    from onnx import TensorProto

    graph = model_proto.graph
    if any(t.data_type == TensorProto.BFLOAT16 for t in graph.initializer):
        return True
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(v.type.tensor_type.elem_type == TensorProto.BFLOAT16 for v in values):
        return True
    return any(_names_bfloat16(node) for node in graph.node)


def _names_bfloat16(node) -> bool:
    from onnx import TensorProto

    for attribute in node.attribute:
        if attribute.name in ("to", "dtype") and attribute.i == TensorProto.BFLOAT16:
            return True
        if attribute.type == attribute.TENSOR and attribute.t.data_type == TensorProto.BFLOAT16:
            return True
        if attribute.type == attribute.GRAPH and any(_names_bfloat16(n) for n in attribute.g.node):
            return True
        if attribute.type == attribute.GRAPHS and any(_names_bfloat16(n) for g in attribute.graphs for n in g.node):
            return True
    return False


def lower_bfloat16(model_proto) -> bool:
    """Rewrites `model_proto` in place to compute bfloat16 in float32, rounding
    to bfloat16 at the source's casts (see the module's docstring).

    Args:
        model_proto: an `onnx.ModelProto` of one graph (local functions inlined).

    Returns:
        Whether the graph had bfloat16 to lower.
    """
    if not has_bfloat16(model_proto):
        return False
    _lower_graph(model_proto.graph, top=True)
    return True


def _lower_graph(graph, top: bool) -> None:
    from onnx import TensorProto, helper

    casts_weights = _casts_weights(graph)
    nodes = []
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.BFLOAT16:  # its bytes untouched: they may not be loaded
            stored = tensor.name + BFLOAT16_SUFFIX
            nodes.append(helper.make_node("Cast", [stored], [tensor.name], to=TensorProto.FLOAT, name=stored))
            tensor.name = stored
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == attribute.GRAPH:
                _lower_graph(attribute.g, top=False)
            elif attribute.type == attribute.GRAPHS:
                for subgraph in attribute.graphs:
                    _lower_graph(subgraph, top=False)
            elif attribute.type == attribute.TENSOR and attribute.t.data_type == TensorProto.BFLOAT16:
                attribute.t.CopyFrom(_as_float32(attribute.t))
            elif attribute.name == "dtype" and attribute.i == TensorProto.BFLOAT16:
                attribute.i = TensorProto.FLOAT
        nodes.append(node)
        if node.op_type == "Cast" and _attribute(node, "to") == TensorProto.BFLOAT16:
            # The source rounds here: round, then carry on in float32 under the same name.
            rounded = node.output[0] + BFLOAT16_SUFFIX
            widened = helper.make_node("Cast", [rounded], [node.output[0]], to=TensorProto.FLOAT,
                                       name=(node.name or node.output[0]) + BFLOAT16_SUFFIX)
            node.output[0] = rounded
            nodes.append(widened)
    del graph.node[:]
    weights = {t.name for t in graph.initializer}
    graph.node.extend(_computed_from_weights_where_used(nodes, weights) if casts_weights else nodes)

    kept = [v for v in graph.value_info if v.type.tensor_type.elem_type != TensorProto.BFLOAT16]
    del graph.value_info[:]
    graph.value_info.extend(kept)

    if top:
        _widen_inputs(graph)
        _narrow_outputs(graph)
    else:  # a subgraph's own inputs and outputs carry values of the outer graph's lowered types
        for value in list(graph.input) + list(graph.output):
            if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
                value.type.tensor_type.elem_type = TensorProto.FLOAT


def _widen_inputs(graph) -> None:
    """bfloat16 graph inputs stay bfloat16 in the signature, cast to float32 for the graph."""
    from onnx import TensorProto, helper

    casts = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.BFLOAT16:
            continue
        widened = value.name + BFLOAT16_SUFFIX
        _rename_uses(graph, value.name, widened)
        casts.append(helper.make_node("Cast", [value.name], [widened], to=TensorProto.FLOAT,
                                      name=value.name + BFLOAT16_SUFFIX))
    if casts:
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)


def _narrow_outputs(graph) -> None:
    """bfloat16 graph outputs stay bfloat16: the float32 value is cast on its way out.

    A graph output that is also a graph input (passed through) is left alone."""
    from onnx import TensorProto, helper

    inputs = {v.name for v in graph.input}
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.BFLOAT16 or value.name in inputs:
            continue
        internal = value.name + BFLOAT16_SUFFIX + "_float32"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == value.name:
                    node.output[i] = internal
        _rename_uses(graph, value.name, internal)
        graph.node.append(helper.make_node("Cast", [internal], [value.name], to=TensorProto.BFLOAT16,
                                           name=value.name + BFLOAT16_SUFFIX))


def _computed_from_weights_where_used(nodes: list, weights: set[str]) -> list:
    """`nodes` in an order where each node that computes from weights alone (a
    weight's cast, a transpose of that) comes right before the first other node
    that needs it, instead of wherever the converter put it (often at the head).

    A session that runs the graph in its order (servekit's check of stored
    bfloat16 weights) then holds the float32 form of about one weight at a time,
    not of every weight from the first op on."""
    from_weights = set(weights)
    deferred: dict[str, Any] = {}  # output -> the node computing it from weights alone
    for node in nodes:
        reads = [name for name in node.input if name]
        subgraphs = any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)
        if reads and not subgraphs and all(name in from_weights for name in reads):
            for name in filter(None, node.output):
                deferred[name] = node
                from_weights.add(name)
    ordered: list = []
    placed: set[int] = set()

    def place(node) -> None:
        if id(node) in placed:
            return
        placed.add(id(node))
        for name in node.input:
            if name in deferred:
                place(deferred[name])
        ordered.append(node)

    for node in nodes:
        if node.output and deferred.get(node.output[0]) is node:
            continue  # placed when first needed
        for name in _reads(node):
            if name in deferred:
                place(deferred[name])
        ordered.append(node)
    for node in nodes:  # what no node reads (a graph output, say)
        if node.output and deferred.get(node.output[0]) is node:
            place(node)
    return ordered


def _reads(node) -> Iterator[str]:
    """The values `node` reads, its subgraphs' reads included."""
    yield from node.input
    for attribute in node.attribute:
        for subgraph in [attribute.g] if attribute.type == attribute.GRAPH else attribute.graphs:
            for inner in subgraph.node:
                yield from _reads(inner)


def _rename_uses(graph, old: str, new: str) -> None:
    """Every use of `old` as a node input (subgraphs included) reads `new`."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attribute in node.attribute:
            if attribute.type == attribute.GRAPH:
                _rename_uses(attribute.g, old, new)
            elif attribute.type == attribute.GRAPHS:
                for subgraph in attribute.graphs:
                    _rename_uses(subgraph, old, new)


def casts_weights(model_proto) -> bool:
    """Whether the main graph reads weights through casts to or from bfloat16:
    bfloat16 weights stored behind casts to float32 (`lower_bfloat16`), or the
    float32 weights of a `mixed_bfloat16` model, rounded to bfloat16 on every
    call. Reads no weight's bytes."""
    return _casts_weights(model_proto.graph)


def _casts_weights(graph) -> bool:
    """`casts_weights` of one graph, before or after `lower_bfloat16`."""
    from onnx import TensorProto

    if any(t.data_type == TensorProto.BFLOAT16 for t in graph.initializer):
        return True
    weights = {t.name for t in graph.initializer}
    return any(node.op_type == "Cast" and node.input and node.input[0] in weights
               and _attribute(node, "to") == TensorProto.BFLOAT16 for node in graph.node)


def _attribute(node, name: str):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _as_float32(tensor):
    """A bfloat16 TensorProto as float32, the same name and values."""
    import numpy as np
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)  # ml_dtypes.bfloat16 (the pinned onnx)
    return numpy_helper.from_array(values.astype(np.float32), tensor.name)


@contextlib.contextmanager
def tf2onnx_bfloat16() -> Iterator[None]:
    """tf2onnx with TensorFlow's bfloat16 mapped to ONNX BFLOAT16 (not FLOAT16)."""
    import ml_dtypes
    from onnx import TensorProto
    from tensorflow.core.framework import types_pb2
    from tf2onnx import tf_utils, utils

    saved = tf_utils.TF_TO_ONNX_DTYPE[types_pb2.DT_BFLOAT16], utils.ONNX_TO_NUMPY_DTYPE.get(TensorProto.BFLOAT16)
    tf_utils.TF_TO_ONNX_DTYPE[types_pb2.DT_BFLOAT16] = TensorProto.BFLOAT16
    utils.ONNX_TO_NUMPY_DTYPE[TensorProto.BFLOAT16] = ml_dtypes.bfloat16
    try:
        yield
    finally:
        tf_utils.TF_TO_ONNX_DTYPE[types_pb2.DT_BFLOAT16] = saved[0]
        if saved[1] is None:
            del utils.ONNX_TO_NUMPY_DTYPE[TensorProto.BFLOAT16]
        else:
            utils.ONNX_TO_NUMPY_DTYPE[TensorProto.BFLOAT16] = saved[1]
