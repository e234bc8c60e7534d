"""Frozen graphs with their weights lifted out, for converters that copy
constants (tf2onnx on each optimizer pass, the TFLite converter three times).

While TensorFlow freezes a function's variables into constants, each weight
of `LIFT_BYTES` or more is read as a view of its variable and its constant
only gets a mark (`weights_left_out`); `lift_weights` then makes those
constants graph inputs, and the converter's caller puts each weight back
into the converted model, copied once (`servekit.onnx`,
`servekit.formats.litert_lifted`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence, TypeVar

from servekit import patching


# Constants at least this large are weights: `lift_weights` takes them out of
# the graph a converter converts. Shape, axis and index constants, which
# converters need as constants to fold, are far smaller.
LIFT_BYTES = 2**20


# `weights_left_out` gives a weight's constant this content instead of the weight,
# followed by the weight's index in its list.
_LEFT_OUT_MARK = b"servekit:left-out:"
# Dtypes TensorFlow stores as a constant's `tensor_content` (raw bytes).
_RAW_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
               "uint32", "uint64")


@contextlib.contextmanager
def weights_left_out(values: list):
    """While TensorFlow freezes variables into constants, every
    value of at least `LIFT_BYTES` becomes a constant whose content is a mark,
    and the value goes to `values`, as TensorFlow read it: a NumPy view of the
    variable's buffer, not a copy.

    The freezing would otherwise copy each weight into its constant, and the
    graph would hold a second copy of the weights (a transient third and
    fourth on the way) only for `lift_weights` to take them out again.
    """
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    from tensorflow.python.framework import convert_to_constants
    from tensorflow.python.framework import tensor_util

    original = tensor_util.make_tensor_proto
    converter = convert_to_constants._FunctionConverterDataInEager
    original_eval = converter._eval

    def eval_in_place(self, tensor):
        # `Variable.numpy()` copies the value; a read shares the variable's
        # buffer, and `memoryview` of a CPU tensor is a view of it.
        value = tensor.read_value() if isinstance(tensor, tf.Variable) else tensor
        if value.dtype.name not in _RAW_DTYPES or "GPU" in value.device:
            return original_eval(self, tensor)
        if value.dtype == tf.bfloat16:  # no buffer format for bfloat16: a view of its bits (a bitcast shares them)
            import ml_dtypes

            return np.asarray(memoryview(tf.bitcast(value, tf.uint16))).view(ml_dtypes.bfloat16)
        return np.asarray(memoryview(value))

    def make_tensor_proto(values_, dtype=None, shape=None, verify_shape=False, allow_broadcast=False):
        if (isinstance(values_, np.ndarray) and values_.nbytes >= LIFT_BYTES and values_.dtype.name in _RAW_DTYPES
                and (shape is None or tuple(shape) == values_.shape)
                and (dtype is None or tf.as_dtype(dtype) == tf.as_dtype(values_.dtype))):
            proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(values_.dtype).as_datatype_enum,
                                           tensor_shape=tf.TensorShape(values_.shape).as_proto())
            proto.tensor_content = _LEFT_OUT_MARK + str(len(values)).encode()
            values.append(np.ascontiguousarray(values_))
            return proto
        return original(values_, dtype, shape, verify_shape, allow_broadcast)

    with patching.replaced(tensor_util, make_tensor_proto=make_tensor_proto), \
            patching.replaced(converter, _eval=eval_in_place):
        yield


def left_out(tensor, values: list):
    """The value `weights_left_out` took out of `tensor`, or None."""
    if not values:
        return None
    if tensor.ByteSize() > 256:  # a mark is short; reading a weight's content would copy it
        return None
    content = tensor.tensor_content
    if not content.startswith(_LEFT_OUT_MARK):
        return None
    return values[int(content[len(_LEFT_OUT_MARK):])]


# What `lift_weights` returns: node name -> (TF dtype enum, shape, the bytes or the NumPy array).
LiftedWeights = dict[str, tuple[int, list[int], Any]]


def lift_weights(graph_def, values: Sequence = ()) -> LiftedWeights:
    """Turns the large `Const` nodes of a frozen graph into placeholders.

    tf2onnx copies a constant's bytes into its node proto on every optimizer
    pass (about thirty copies of each weight: 12 GiB of memory and 40 s for a
    400 MB embedding table), and the TFLite converter holds three: weights are
    converted as graph inputs and put back by the caller (`servekit.onnx.
    _restore_weights`, `servekit.formats.litert_lifted.write`), each copied once.

    Args:
        graph_def: the frozen graph, changed in place.
        values: the weights `weights_left_out` took out of its constants.

    Returns:
        node name -> (TF dtype enum, shape, the bytes or the NumPy array), in
        graph order.
    """
    lifted = {}
    for node in graph_def.node:
        if node.op != "Const":
            continue
        tensor = node.attr["value"].tensor
        data = left_out(tensor, values)
        if data is None:
            if tensor.ByteSize() < LIFT_BYTES or len(tensor.tensor_content) < LIFT_BYTES:
                continue
            data = tensor.tensor_content
        dims = [d.size for d in tensor.tensor_shape.dim]
        lifted[node.name] = (tensor.dtype, dims, data)
        dtype = node.attr["dtype"].type
        node.op = "Placeholder"
        node.ClearField("attr")
        node.attr["dtype"].type = dtype
        for size in dims:
            node.attr["shape"].shape.dim.add().size = size
    for function in graph_def.library.function:  # a weight in a function body stays a constant
        for node in function.node_def:
            if node.op == "Const":
                data = left_out(node.attr["value"].tensor, values)
                if data is not None:
                    node.attr["value"].tensor.tensor_content = data.tobytes()
    return lifted


_Graph = TypeVar("_Graph")


def optimized_without_weight_copies(graph_def, weights: Sequence[str], optimize: Callable[[Any], _Graph]) -> _Graph:
    """`optimize(graph_def)`, a grappler pass, with the placeholders named in
    `weights` given an unknown first dim for it (in place), and their shapes
    given back in its result.

    Grappler makes up a tensor for every placeholder of a fully known shape
    and fills it: a copy of every lifted weight, in memory at once. The
    converters after it need the shapes (a convolution's filter).
    """
    shapes, weights = {}, set(weights)
    for node in graph_def.node:
        if node.name in weights and node.op == "Placeholder" and node.attr["shape"].shape.dim:
            shapes[node.name] = node.attr["shape"].shape.dim[0].size
            node.attr["shape"].shape.dim[0].size = -1
    optimized = optimize(graph_def)
    for node in optimized.node:
        if node.name in shapes:
            node.attr["shape"].shape.dim[0].size = shapes[node.name]
    return optimized
