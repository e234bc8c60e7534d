"""TensorFlow ops OpenVINO's TensorFlow frontend cannot convert, converted here.

Keras's preprocessing layers trace to ops OpenVINO 2026.4's frontend has no
rule for, or a broken one; `extensions()` gives `ov.convert_model` a
conversion for each, built from OpenVINO's own ops:

- `Bucketize` (`Discretization`): its rule fails reading the boundaries
  ("Bad as from vector<double> to vector<float>").
- `DenseBincount` (`CategoryEncoding` in `multi_hot` and `count` modes): no
  rule.

`unconverted(error)` reads the frontend's summary of what it could not
convert, for the export's error message.
"""

from __future__ import annotations

import re

import numpy as np


def extensions() -> list:
    """The `ov.convert_model(extension=...)` list."""
    from openvino.frontend import ConversionExtension

    return [ConversionExtension("Bucketize", _bucketize), ConversionExtension("DenseBincount", _dense_bincount)]


def _bucketize(node):
    """`Bucketize(input, boundaries)`: the index of the bucket each value falls in,
    `boundaries[i-1] <= x < boundaries[i]` (left-closed), as int32."""
    import openvino.opset13 as ops

    boundaries = np.asarray(node.get_attribute("boundaries"), dtype=np.float32)
    data = node.get_input(0)
    return ops.bucketize(data, ops.constant(boundaries.astype(_numpy_type(data))), "i32",
                         with_right_bound=False).outputs()


def _dense_bincount(node):
    """`DenseBincount(input, size, weights)`: per row of a rank-2 input (or for a
    rank-1 one), how often each value in `[0, size)` occurs (the sum of its
    weights when there are any), or whether it does (`binary_output`). Values
    outside `[0, size)` count nowhere, as OpenVINO's `OneHot` leaves them."""
    import openvino as ov
    import openvino.opset13 as ops

    values, size, weights = node.get_input(0), node.get_input(1), node.get_input(2)
    # A SavedModel leaves out attributes at their default (binary_output=False).
    binary = node.has_attribute("binary_output") and bool(node.get_attribute("binary_output"))
    rank = values.get_partial_shape().rank
    if rank.is_dynamic or rank.get_length() not in (1, 2):
        raise ValueError(f"DenseBincount of an input of rank {rank}: TensorFlow takes rank 1 or 2")
    numpy_type = _numpy_type(weights)
    hot = ops.one_hot(ops.convert(values, ov.Type.i64), ops.convert(size, ov.Type.i64),
                      ops.constant(np.array(1, numpy_type)), ops.constant(np.array(0, numpy_type)), axis=-1)
    weight_shape = weights.get_partial_shape()
    weighted = not (weight_shape.is_static and ov.Shape(weight_shape.to_shape()) == ov.Shape([0]))
    if weighted and not binary:
        hot = ops.multiply(hot, ops.unsqueeze(weights, ops.constant(np.array([-1], np.int64))))
    axis = ops.constant(np.array([rank.get_length() - 1], np.int64))
    counted = ops.reduce_max(hot, axis, keep_dims=False) if binary else ops.reduce_sum(hot, axis, keep_dims=False)
    return counted.outputs()


def _numpy_type(output) -> type:
    return output.get_element_type().to_dtype().type


_SUMMARY = re.compile(r"^-- (No conversion rule found for operations|Conversion is failed for): (.+)$", re.M)


def unconverted(error: BaseException) -> str:
    """The frontend's summary of the ops it could not convert, as a predicate
    ("has no rule for Erfinv and failed to convert Bucketize"), or "" when
    its error has none."""
    found = [f"{'has no rule for' if kind.startswith('No') else 'failed to convert'} {ops.strip()}"
             for kind, ops in _SUMMARY.findall(str(error))]
    return " and ".join(found)
